//! `[[routes.splits]]`: gray release. Every mistake of a route's splits is
//! reported with its path, in the same pass as the rest of the file.

use super::{check, Cx};
use crate::raw::RawSplit;
use crate::typed::{ServiceId, Split};

/// Split weights are percent of users.
pub(crate) const MAX_WEIGHT: u32 = 100;

/// Splits per route: more is a mistake (and the gateway's bucket tables
/// keep a choice in one byte).
pub(crate) const MAX_SPLITS: usize = 64;

/// `base` is `routes[i]`; `own` is the route's service when it resolved.
pub(super) fn splits(
    cx: &mut Cx<'_>,
    base: &str,
    raw: &[RawSplit],
    own: Option<ServiceId>,
) -> Vec<Split> {
    if raw.len() > MAX_SPLITS {
        cx.errs.push(
            format!("{base}.splits"),
            format!("at most {MAX_SPLITS} splits per route"),
        );
    }
    let mut out = Vec::with_capacity(raw.len());
    // (service, index of the split that named it first)
    let mut seen: Vec<(ServiceId, usize)> = Vec::new();
    let mut total = 0u32;
    for (j, s) in raw.iter().enumerate() {
        let at = format!("{base}.splits[{j}]");
        let service = if s.service.is_empty() {
            cx.errs.push(format!("{at}.service"), "is required");
            None
        } else {
            cx.service(format!("{at}.service"), &s.service)
        };
        let service = match service {
            Some(id) if Some(id) == own => {
                cx.errs.push(
                    format!("{at}.service"),
                    format!(
                        "{:?} is the route's own service: a split names another service",
                        s.service
                    ),
                );
                None
            }
            Some(id) => match seen.iter().find(|(sid, _)| *sid == id) {
                Some((_, first)) => {
                    cx.errs.push(
                        format!("{at}.service"),
                        format!(
                            "duplicate split service {:?} (also {base}.splits[{first}])",
                            s.service
                        ),
                    );
                    None
                }
                None => {
                    seen.push((id, j));
                    Some(id)
                }
            },
            None => None,
        };
        let weight = if s.weight > MAX_WEIGHT {
            cx.errs.push(
                format!("{at}.weight"),
                format!("must be between 0 and {MAX_WEIGHT} (percent of users)"),
            );
            0
        } else {
            total += s.weight;
            s.weight as u8
        };
        let match_header = s.match_header.as_ref().and_then(|h| {
            cx.errs
                .check(format!("{at}.match_header"), check::header_name(h))
        });
        let mut units = Vec::new();
        for (k, name) in s.units.iter().enumerate() {
            let path = format!("{at}.units[{k}]");
            if s.units[..k].contains(name) {
                cx.errs.push(path, format!("duplicate unit {name:?}"));
            } else if let Some(u) = cx.unit(path, name) {
                units.push(u);
            }
        }
        if let Some(service) = service {
            out.push(Split {
                service,
                weight,
                match_header,
                units,
            });
        }
    }
    if total > MAX_WEIGHT {
        cx.errs.push(
            format!("{base}.splits"),
            format!("weights add up to {total}: all splits of a route take at most {MAX_WEIGHT} percent of users"),
        );
    }
    out
}
