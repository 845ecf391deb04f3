//! The HTTP endpoint: `GET /metrics` in the OpenMetrics text format, served from its own thread
//! so a slow scraper never delays the session's reading of the kernel maps.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

use prometheus_client::registry::Registry;
use tiny_http::{Header, Method, Response, Server};

use super::totals::{Shared, Totals};
use crate::error::{Exit, user};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub struct Exporter {
    pub totals: Arc<Mutex<Totals>>,
    pub addr: SocketAddr,
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Listens on `addr` (checked by `address::check`) and serves the totals of process `pid`.
    pub fn start(addr: SocketAddr, pid: u32) -> anyhow::Result<Exporter> {
        // Every thread of the server (tiny_http starts its own as it listens and as clients
        // connect) inherits the stop signals blocked: a SIGINT delivered to one of them, with no
        // handler there, would kill gilwatch before the session's watcher could see it.
        let blocked = crate::stop::block()?;
        let started = Self::listen(addr, pid);
        blocked.restore()?;
        started
    }

    fn listen(addr: SocketAddr, pid: u32) -> anyhow::Result<Exporter> {
        let server = Server::http(addr).map_err(|e| {
            user(
                Exit::Usage,
                format!("cannot listen on {addr} for --prometheus: {e} (pick another port: --prometheus 127.0.0.1:PORT)"),
            )
        })?;
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        let server = Arc::new(server);
        let totals = Arc::new(Mutex::new(Totals::new(pid)));
        let mut registry = Registry::with_prefix("gilwatch");
        registry.register_collector(Box::new(Shared(totals.clone())));
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("gilwatch-http".into())
            .spawn(move || serve(&serving, &registry))?;
        Ok(Exporter {
            totals,
            addr,
            server,
            thread: Some(thread),
        })
    }
}

fn serve(server: &Server, registry: &Registry) {
    for req in server.incoming_requests() {
        let response = match (req.method(), req.url().split('?').next()) {
            (Method::Get | Method::Head, Some("/metrics")) => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, registry) {
                    Ok(()) => Response::from_string(body).with_header(
                        Header::from_bytes("Content-Type", CONTENT_TYPE).expect("static header"),
                    ),
                    Err(_) => Response::from_string("encoding failed\n").with_status_code(500),
                }
            }
            (Method::Get, Some("/")) => {
                Response::from_string("gilwatch: GIL metrics of one process at /metrics\n")
            }
            _ => Response::from_string("not found: try /metrics\n").with_status_code(404),
        };
        // A scraper that went away mid-answer is its own problem.
        let _ = req.respond(response);
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
