//! The worker's tiny HTTP server: `GET /metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (200 once the models are loaded and the broker is connected, 503 before, while reconnecting and
//! once shutting down; `vislingo_worker_ready` says the same on /metrics). It keeps answering while a SIGTERM
//! drains the jobs in hand, so that the drain shows on /metrics and health checks do not kill it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::shutdown::Shutdown;
use crate::metrics::Metrics;

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Readiness {
    pub models_loaded: AtomicBool,
    pub broker_connected: AtomicBool,
    /// Shutdown was asked: the jobs in hand are finishing, no new job is taken.
    pub draining: AtomicBool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.models_loaded.load(Ordering::SeqCst)
            && self.broker_connected.load(Ordering::SeqCst)
            && !self.draining.load(Ordering::SeqCst)
    }
}

/// Serves until the process ends (a drain after SIGTERM included). Each connection gets one response and is
/// closed.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, readiness: Arc<Readiness>, shutdown: Shutdown) {
    let draining = readiness.clone();
    tokio::spawn(async move {
        shutdown.triggered().await;
        draining.draining.store(true, Ordering::SeqCst);
    });
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let (metrics, readiness) = (metrics.clone(), readiness.clone());
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            let mut read = 0;
            // Read until the end of the request head (or a full buffer): only the request line matters.
            while read < buffer.len() {
                match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buffer[read..])).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => read += n,
                }
                if buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buffer[..read]);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, content_type, body) = respond(method, path, &metrics, &readiness);
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

fn respond(method: &str, path: &str, metrics: &Metrics, readiness: &Readiness) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" {
        return ("405 Method Not Allowed", TEXT, "GET only\n".into());
    }
    match path.split('?').next().unwrap_or("") {
        "/metrics" => {
            metrics.ready.set(readiness.ready() as i64);
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render())
        }
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" if readiness.ready() => ("200 OK", TEXT, "ready\n".into()),
        "/readyz" => {
            let models = readiness.models_loaded.load(Ordering::SeqCst);
            (
                "503 Service Unavailable",
                TEXT,
                format!(
                    "not ready: models loaded {models}, broker connected {}, shutting down {}\n",
                    readiness.broker_connected.load(Ordering::SeqCst),
                    readiness.draining.load(Ordering::SeqCst)
                ),
            )
        }
        _ => ("404 Not Found", TEXT, "not found: /metrics, /healthz, /readyz\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_waits_for_models_and_broker_a_drain_stays_alive_unready_and_unknown_paths_are_404() {
        let metrics = Metrics::new();
        let readiness = Readiness::default();
        assert_eq!(respond("GET", "/readyz", &metrics, &readiness).0, "503 Service Unavailable");
        assert!(respond("GET", "/metrics", &metrics, &readiness).2.contains("vislingo_worker_ready 0"));
        readiness.models_loaded.store(true, Ordering::SeqCst);
        readiness.broker_connected.store(true, Ordering::SeqCst);
        assert_eq!(respond("GET", "/readyz", &metrics, &readiness).0, "200 OK");
        assert_eq!(respond("GET", "/healthz", &metrics, &readiness).0, "200 OK");
        let text = respond("GET", "/metrics", &metrics, &readiness).2;
        assert!(text.contains("vislingo_jobs_total") && text.contains("vislingo_worker_ready 1"), "{text}");
        assert_eq!(respond("GET", "/nope", &metrics, &readiness).0, "404 Not Found");
        // SIGTERM: no longer ready, still alive (the jobs in hand finish).
        readiness.draining.store(true, Ordering::SeqCst);
        assert_eq!(respond("GET", "/readyz", &metrics, &readiness).0, "503 Service Unavailable");
        assert_eq!(respond("GET", "/healthz", &metrics, &readiness).0, "200 OK");
        assert!(respond("GET", "/metrics", &metrics, &readiness).2.contains("vislingo_worker_ready 0"));
        assert_eq!(respond("POST", "/metrics", &metrics, &readiness).0, "405 Method Not Allowed");
    }
}
