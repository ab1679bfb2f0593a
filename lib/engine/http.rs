//! JSON over plain HTTP/1.1 to one server, with retries: a connection error, a timeout or a 5xx
//! is retried with exponential back-off (0.5 s, 1 s, 2 s, ... at most 8 s apart); any other
//! failure (a 4xx, a body that is not JSON) is returned at once.

use std::time::Duration;

use serde_json::Value;

/// What went wrong with one call, for the caller to name the server and the request.
#[derive(Debug)]
pub enum CallError {
    /// The server could not be reached, timed out or kept answering 5xx through every retry.
    Down(String),
    /// The server answered with an error status (not retried).
    Status(u16, String),
    /// The body is not JSON.
    Body(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Down(d) => write!(f, "{d}"),
            CallError::Status(code, body) => write!(f, "HTTP {code}: {}", clip(body)),
            CallError::Body(d) => write!(f, "{d}"),
        }
    }
}

fn clip(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// A server's base URL (`http://host:port`, no trailing slash) and its connection pool.
#[derive(Clone)]
pub struct Server {
    pub url: String,
    agent: ureq::Agent,
    retries: usize,
}

/// Responses of this size are accepted (hidden states of long responses are large).
const BODY_LIMIT: u64 = 1 << 30;

impl Server {
    pub fn new(url: &str, timeout: Duration, retries: usize) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Server { url: url.trim_end_matches('/').to_string(), agent, retries }
    }

    /// GET `path`, once (for probing: no retries).
    pub fn get_once(&self, path: &str) -> Result<Value, CallError> {
        self.once(path, None)
    }

    /// POST `body` as JSON to `path`, retrying what a restart or an overload explains.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let mut wait = Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            match self.once(path, Some(body)) {
                Err(CallError::Down(d)) if attempt < self.retries => {
                    let _ = d;
                }
                Err(CallError::Status(code, _)) if code >= 500 && attempt < self.retries => {}
                Err(CallError::Down(d)) => return Err(CallError::Down(format!("{d} (after {} tries)", attempt + 1))),
                Err(CallError::Status(code, b)) if code >= 500 => {
                    return Err(CallError::Status(code, format!("{} (after {} tries)", clip(&b), attempt + 1)))
                }
                other => return other,
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(8));
            attempt += 1;
        }
    }

    fn once(&self, path: &str, body: Option<&Value>) -> Result<Value, CallError> {
        let url = format!("{}{path}", self.url);
        let resp = match body {
            Some(b) => self.agent.post(&url).header("Content-Type", "application/json").send(b.to_string()),
            None => self.agent.get(&url).call(),
        };
        let mut resp = resp.map_err(|e| CallError::Down(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| CallError::Down(format!("reading the response: {e}")))?;
        if !(200..300).contains(&status) {
            return Err(CallError::Status(status, text));
        }
        serde_json::from_str(&text).map_err(|e| CallError::Body(format!("the response is not JSON ({e}): {}", clip(&text))))
    }
}
