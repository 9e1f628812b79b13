//! A minimal blocking HTTP/1.1 keep-alive client: one request at a time on
//! one connection, responses framed by `Content-Length` only (what every
//! server in the bench sends for `return 200 "ok\n"`). Used where wrk does
//! not fit: holding thousands of idle connections (`idle-conns`) and an
//! exact request count on one connection (`callgrind`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// The bytes of `GET path` with `headers` (`Name: value`), keep-alive.
pub fn request(addr: SocketAddr, path: &str, headers: &[String]) -> Vec<u8> {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: unitgate-bench\r\n{extra}\r\n")
        .into_bytes()
}

/// A keep-alive connection; `buf` keeps bytes read past a response.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects with `timeout` for the connect and for every later read and
    /// write; Nagle off, as wrk does.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(1024),
        })
    }

    pub fn send(&mut self, req: &[u8]) -> Result<()> {
        self.stream.write_all(req).context("writing a request")
    }

    /// Reads one whole response; returns its status. A response without
    /// `Content-Length` (chunked, close-delimited) is an error.
    pub fn read_response(&mut self) -> Result<u16> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                bail!("response head larger than {MAX_HEAD} bytes");
            }
            self.fill()?;
        };
        let (status, len) = parse_head(&self.buf[..head_end])?;
        while self.buf.len() < head_end + len {
            self.fill()?;
        }
        self.buf.drain(..head_end + len);
        Ok(status)
    }

    /// One request and its response.
    pub fn exchange(&mut self, req: &[u8]) -> Result<u16> {
        self.send(req)?;
        self.read_response()
    }

    fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).context("reading a response")?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// (status, Content-Length) of a response head.
fn parse_head(head: &[u8]) -> Result<(u16, usize)> {
    let text = std::str::from_utf8(head).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP/1 status line: {status_line:?}"))?;
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .context("bad Content-Length")?
        .ok_or_else(|| anyhow!("response without Content-Length: {status_line}"))?;
    Ok((status, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_length() {
        let h = b"HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(parse_head(h).expect("valid"), (200, 3));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn reads_back_to_back_responses_on_one_connection() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while got.windows(4).filter(|w| w == b"\r\n\r\n").count() < 2 {
                let n = s.read(&mut b).expect("read");
                got.extend_from_slice(&b[..n]);
            }
            // Both responses in one write: the second must stay buffered.
            s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            )
            .expect("write");
        });
        let mut c = Conn::connect(addr, Duration::from_secs(5)).expect("connect");
        let req = request(addr, "/", &["X-A: 1".into()]);
        assert!(String::from_utf8_lossy(&req).contains("X-A: 1\r\n\r\n"));
        c.send(&req).expect("send");
        c.send(&req).expect("send");
        assert_eq!(c.read_response().expect("first"), 200);
        assert_eq!(c.read_response().expect("second"), 404);
        server.join().expect("server");
    }
}
