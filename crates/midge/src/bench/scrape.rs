//! `--scrape URL`: a thread that GETs a URL (a broker's Prometheus `/metrics`) at a fixed
//! interval while the run lasts, as a monitoring server would, so that a run measures the
//! broker with its metrics being read.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What the scrapes of a run came to.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct ScrapeStats {
    pub(crate) url: String,
    pub(crate) interval_ms: u64,
    /// Scrapes answered with a 2xx status.
    pub(crate) ok: u64,
    /// Scrapes that failed: another status, no answer, a timeout.
    pub(crate) failed: u64,
    /// Size of the last successful answer's body.
    pub(crate) last_bytes: u64,
    /// Mean and longest time of a successful scrape, request to the body's end.
    pub(crate) mean_ms: f64,
    pub(crate) max_ms: f64,
    /// The first failure's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_error: Option<String>,
}

/// The scraping thread; [`Scraper::stop`] ends it and returns its figures.
pub(crate) struct Scraper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<ScrapeStats>,
}

impl Scraper {
    /// Starts scraping `url` now and then every `interval`.
    pub(crate) fn start(url: String, interval: Duration) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || scrape_loop(&url, interval, &flag));
        Self { stop, thread }
    }

    pub(crate) fn stop(self) -> ScrapeStats {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cvar.notify_all();
        self.thread.join().unwrap_or_default()
    }
}

fn scrape_loop(url: &str, interval: Duration, stop: &(Mutex<bool>, Condvar)) -> ScrapeStats {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A scrape never outlasts its interval by much; Prometheus's default timeout is 10 s.
        .timeout_global(Some(
            interval.clamp(Duration::from_millis(100), Duration::from_secs(10)),
        ))
        .max_redirects(0)
        .build()
        .new_agent();
    let mut stats = ScrapeStats {
        url: url.to_owned(),
        interval_ms: interval.as_millis() as u64,
        ..ScrapeStats::default()
    };
    let mut total_ms = 0.0;
    let start = Instant::now();
    let mut n: u32 = 0;
    loop {
        let t0 = Instant::now();
        match scrape(&agent, url) {
            Ok(bytes) => {
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                stats.ok += 1;
                stats.last_bytes = bytes;
                total_ms += ms;
                stats.max_ms = stats.max_ms.max(ms);
            }
            Err(e) => {
                stats.failed += 1;
                stats.first_error.get_or_insert(e);
            }
        }
        // On a fixed schedule: a slow scrape does not push the next ones back.
        n = n.saturating_add(1);
        let next = start + interval.saturating_mul(n);
        let (lock, cvar) = stop;
        let mut stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if *stopped {
                if stats.ok > 0 {
                    stats.mean_ms = total_ms / stats.ok as f64;
                }
                return stats;
            }
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            stopped = cvar
                .wait_timeout(stopped, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// One GET: the body's size, or why it failed.
fn scrape(agent: &ureq::Agent, url: &str) -> Result<u64, String> {
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    Ok(body.len() as u64)
}

/// Checks a `--scrape` URL: plain HTTP, as Prometheus scrapes a broker on its own machine.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("--scrape {url}: give an http:// URL (such as http://127.0.0.1:8080/metrics)")
    })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("--scrape {url}: the URL has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn scrapes_at_the_interval_and_counts_failures() {
        // A server that answers every request with a small body and closes.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { break };
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let answer: &[u8] = if i == 1 {
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nup 1\n"
                };
                let _ = stream.write_all(answer);
            }
        });
        let scraper = Scraper::start(format!("http://{addr}/metrics"), Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(280));
        let stats = scraper.stop();
        assert!(stats.ok >= 3, "{stats:?}");
        assert_eq!(stats.failed, 1, "{stats:?}");
        assert_eq!(stats.last_bytes, 5);
        assert!(
            stats.first_error.as_deref().unwrap_or("").contains("503"),
            "{stats:?}"
        );
        assert!(check_url("https://a/metrics").is_err());
        assert!(check_url("http:///metrics").is_err());
        assert!(check_url("http://127.0.0.1:9/metrics").is_ok());
    }
}
