//! Where the exporter listens: loopback unless the user says otherwise, since GIL metrics name
//! a service's threads and the endpoint has no authentication.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The default port (next to the OpenTelemetry exporters' 9464, as in Prometheus's port list).
pub const DEFAULT_PORT: u16 = 9464;

/// `9464`, `127.0.0.1:9464`, `[::1]:9464`, `0.0.0.0:9464` (the last only with `public`).
pub fn parse(s: &str) -> Result<SocketAddr, String> {
    let addr = match s.parse::<u16>() {
        Ok(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        Err(_) => s.parse::<SocketAddr>().map_err(|_| {
            format!(
                "`{s}` is not PORT or IP:PORT (e.g. {DEFAULT_PORT} or 127.0.0.1:{DEFAULT_PORT})"
            )
        })?,
    };
    Ok(addr)
}

/// Refuses a non-loopback address unless `public` was given.
pub fn check(addr: SocketAddr, public: bool) -> Result<SocketAddr, String> {
    if addr.ip().is_loopback() || public {
        Ok(addr)
    } else {
        Err(format!(
            "--prometheus {addr} would serve this process's thread names and GIL metrics to the \
             network without authentication; add --prometheus-public to mean it, or listen on \
             127.0.0.1:{}",
            addr.port()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_by_default() {
        assert_eq!(parse("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(parse("[::1]:9000").unwrap().to_string(), "[::1]:9000");
        assert!(parse("localhost").unwrap_err().contains("PORT or IP:PORT"));
        let any = parse("0.0.0.0:9464").unwrap();
        assert!(
            check(any, false)
                .unwrap_err()
                .contains("--prometheus-public")
        );
        assert_eq!(check(any, true), Ok(any));
        assert!(check(parse("127.0.0.1:1").unwrap(), false).is_ok());
    }
}
