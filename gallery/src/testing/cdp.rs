//! A minimal, blocking Chrome DevTools Protocol client: headless Chromium started with `--remote-debugging-pipe`,
//! messages as NUL-terminated JSON on file descriptors 3 (to the browser) and 4 (from it), so that no port, no
//! websocket and no HTTP endpoint are involved. Enough for the gallery's browser test and benchmark: open a page,
//! evaluate script, read events (console, network), take screenshots, ask which fonts rendered a node.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use thiserror::Error;

/// The flags this machine needs (no sandbox as root, no GPU) and those that keep Chromium from reaching the
/// network on its own (updates, sync, QUIC, first-run pages).
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
];
/// How long one command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum CdpError {
    #[error(
        "no Chromium found (tried $CHROMIUM, {tried}); install it (Debian: apt-get install chromium, as .ci/run does) \
         or set CHROMIUM to its path"
    )]
    NotFound { tried: String },
    #[error("cannot start {binary}: {source}")]
    Launch {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the pipe to Chromium failed: {0}")]
    Pipe(#[source] std::io::Error),
    #[error("Chromium closed the connection (it exited or crashed) while waiting for {0}")]
    Closed(String),
    #[error("{method}: no answer within {seconds} s")]
    Timeout { method: String, seconds: u64 },
    #[error("{method} failed: {message}")]
    Command { method: String, message: String },
    #[error("script failed: {0}")]
    Script(String),
}

/// A protocol event: `method`, `params`, and the session (page) it came from.
#[derive(Debug, Clone)]
pub struct Event {
    pub session: Option<String>,
    pub method: String,
    pub params: Value,
}

#[derive(Default)]
struct Inbox {
    responses: HashMap<u64, Value>,
    events: Vec<Event>,
    closed: bool,
}

struct Shared {
    inbox: Mutex<Inbox>,
    arrived: Condvar,
}

/// A running headless Chromium; killed when dropped.
pub struct Browser {
    child: Child,
    to_browser: Mutex<File>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    /// The throw-away profile (`--user-data-dir`), removed after the browser exits.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `$CHROMIUM`, else the first of `chromium`, `chromium-browser`, `google-chrome` on the `PATH`.
    pub fn launch() -> Result<Browser, CdpError> {
        let binary = find_chromium()?;
        let profile = tempfile::Builder::new().prefix("vislingo-chromium-").tempdir().map_err(CdpError::Pipe)?;
        let (from_test, to_browser) = pipe()?;
        let (from_browser, to_test) = pipe()?;
        let mut command = Command::new(&binary);
        command
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if std::env::var_os("VISLINGO_CHROMIUM_LOG").is_some() {
            command.stderr(Stdio::inherit());
        }
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Move both ends above 3 and 4 first, so that placing one cannot close the other.
                let read = libc::fcntl(from_test, libc::F_DUPFD, 10);
                let write = libc::fcntl(to_test, libc::F_DUPFD, 10);
                if read < 0 || write < 0 || libc::dup2(read, 3) < 0 || libc::dup2(write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        // SAFETY: the descriptors come from pipe() above and are owned here alone.
        unsafe {
            libc::close(from_test);
            libc::close(to_test);
        }
        let child = spawned.map_err(|source| CdpError::Launch { binary: binary.clone(), source })?;
        // SAFETY: as above; each File takes ownership of its descriptor.
        let (to_browser, from_browser) = unsafe { (File::from_raw_fd(to_browser), File::from_raw_fd(from_browser)) };
        let shared = Arc::new(Shared { inbox: Mutex::new(Inbox::default()), arrived: Condvar::new() });
        let reader_shared = Arc::clone(&shared);
        std::thread::spawn(move || read_messages(from_browser, &reader_shared));
        Ok(Browser { child, to_browser: Mutex::new(to_browser), shared, next_id: AtomicU64::new(1), _profile: profile })
    }

    /// Sends a command (to the browser, or to a page's `session`) and waits for its result.
    pub fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, CdpError> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("JSON");
        bytes.push(0);
        self.to_browser.lock().unwrap_or_else(|e| e.into_inner()).write_all(&bytes).map_err(CdpError::Pipe)?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        let mut inbox = self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(response) = inbox.responses.remove(&id) {
                if let Some(error) = response.get("error") {
                    let message = error.get("message").and_then(Value::as_str).unwrap_or("unknown error");
                    return Err(CdpError::Command { method: method.to_string(), message: message.to_string() });
                }
                return Ok(response.get("result").cloned().unwrap_or(Value::Null));
            }
            if inbox.closed {
                return Err(CdpError::Closed(method.to_string()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CdpError::Timeout { method: method.to_string(), seconds: CALL_TIMEOUT.as_secs() });
            }
            inbox = self.shared.arrived.wait_timeout(inbox, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Every event received so far.
    pub fn events(&self) -> Vec<Event> {
        self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner()).events.clone()
    }

    /// Opens a new page (tab) of `width`x`height` CSS pixels, with the domains the tests read enabled.
    pub fn new_page(&self, width: u32, height: u32, mobile: bool) -> Result<Page<'_>, CdpError> {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"].as_str().unwrap_or_default().to_string();
        let attached = self.call(None, "Target.attachToTarget", json!({"targetId": target_id, "flatten": true}))?;
        let session = attached["sessionId"].as_str().unwrap_or_default().to_string();
        let page = Page { browser: self, session, target_id };
        for domain in ["Page", "Runtime", "Network", "Log", "DOM", "CSS"] {
            page.call(&format!("{domain}.enable"), json!({}))?;
        }
        page.resize(width, height, mobile)?;
        Ok(page)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab, reached through its flattened session.
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
    target_id: String,
}

impl Page<'_> {
    pub fn call(&self, method: &str, params: Value) -> Result<Value, CdpError> {
        self.browser.call(Some(&self.session), method, params)
    }

    /// This page's events so far.
    pub fn events(&self) -> Vec<Event> {
        self.browser.events().into_iter().filter(|event| event.session.as_deref() == Some(&self.session)).collect()
    }

    /// Emulates a viewport of `width`x`height` CSS pixels at device scale 1 (`mobile`: a phone's viewport rules).
    pub fn resize(&self, width: u32, height: u32, mobile: bool) -> Result<(), CdpError> {
        let metrics = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        self.call("Emulation.setDeviceMetricsOverride", metrics)?;
        Ok(())
    }

    /// Navigates to `path` as a `file://` URL and waits for the load event.
    pub fn open_file(&self, path: &Path) -> Result<(), CdpError> {
        let loads_before = self.count_events("Page.loadEventFired");
        let url = file_url(path);
        let navigated = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(error) = navigated.get("errorText").and_then(Value::as_str) {
            return Err(CdpError::Command { method: "Page.navigate".into(), message: format!("{url}: {error}") });
        }
        let deadline = Instant::now() + CALL_TIMEOUT;
        while self.count_events("Page.loadEventFired") == loads_before {
            if Instant::now() >= deadline {
                return Err(CdpError::Timeout {
                    method: "Page.loadEventFired".into(),
                    seconds: CALL_TIMEOUT.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn count_events(&self, method: &str) -> usize {
        self.events().iter().filter(|event| event.method == method).count()
    }

    /// The value of a script expression (promises awaited), as JSON.
    pub fn eval(&self, expression: &str) -> Result<Value, CdpError> {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true, "userGesture": true}),
        )?;
        if let Some(details) = result.get("exceptionDetails") {
            let text = details["exception"]["description"].as_str().or(details["text"].as_str()).unwrap_or("exception");
            return Err(CdpError::Script(format!("{expression}: {text}")));
        }
        Ok(result["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Evaluates `expression` until it is `true`, up to `timeout`.
    pub fn wait_for(&self, expression: &str, timeout: Duration) -> Result<(), CdpError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(expression)? == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CdpError::Timeout {
                    method: format!("wait for `{expression}`"),
                    seconds: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `text` into the focused element as a keyboard would (input events fire).
    pub fn insert_text(&self, text: &str) -> Result<(), CdpError> {
        self.call("Input.insertText", json!({"text": text}))?;
        Ok(())
    }

    /// A PNG of the viewport (`full_page`: the whole page's height).
    pub fn screenshot(&self, full_page: bool) -> Result<Vec<u8>, CdpError> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": full_page}))?;
        let data = shot["data"].as_str().unwrap_or_default();
        base64_decode(data).ok_or_else(|| CdpError::Script("the screenshot is not base64".into()))
    }

    /// The fonts that rendered the text of the first element matching `selector`: `(family, glyphs)`.
    pub fn platform_fonts(&self, selector: &str) -> Result<Vec<(String, u64)>, CdpError> {
        let document = self.call("DOM.getDocument", json!({"depth": 0}))?;
        let root = document["root"]["nodeId"].as_i64().unwrap_or_default();
        let found = self.call("DOM.querySelector", json!({"nodeId": root, "selector": selector}))?;
        let node = found["nodeId"].as_i64().unwrap_or_default();
        if node == 0 {
            return Err(CdpError::Script(format!("no element matches `{selector}`")));
        }
        let fonts = self.call("CSS.getPlatformFontsForNode", json!({"nodeId": node}))?;
        Ok(fonts["fonts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|font| {
                (font["familyName"].as_str().unwrap_or_default().to_string(), font["glyphCount"].as_u64().unwrap_or(0))
            })
            .collect())
    }

    pub fn close(self) -> Result<(), CdpError> {
        self.browser.call(None, "Target.closeTarget", json!({"targetId": self.target_id}))?;
        Ok(())
    }
}

/// `file:///...` for an absolute path (percent-encoding what a URL path may not hold).
pub fn file_url(path: &Path) -> String {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut url = String::from("file://");
    for byte in absolute.to_string_lossy().bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => url.push(byte as char),
            other => url.push_str(&format!("%{other:02X}")),
        }
    }
    url
}

fn find_chromium() -> Result<PathBuf, CdpError> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    let names = ["chromium", "chromium-browser", "google-chrome"];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(CdpError::NotFound { tried: names.join(", ") })
}

/// A pipe whose ends are closed on exec (the child gets copies through dup2).
fn pipe() -> Result<(RawFd, RawFd), CdpError> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(CdpError::Pipe(std::io::Error::last_os_error()));
    }
    Ok((fds[0], fds[1]))
}

fn read_messages(from_browser: File, shared: &Shared) {
    let mut reader = BufReader::with_capacity(1 << 20, from_browser);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(0, &mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if buffer.last() == Some(&0) {
            buffer.pop();
        }
        let Ok(message) = serde_json::from_slice::<Value>(&buffer) else { continue };
        let mut inbox = shared.inbox.lock().unwrap_or_else(|e| e.into_inner());
        match message.get("id").and_then(Value::as_u64) {
            Some(id) => {
                inbox.responses.insert(id, message);
            }
            None => inbox.events.push(Event {
                session: message.get("sessionId").and_then(Value::as_str).map(str::to_string),
                method: message.get("method").and_then(Value::as_str).unwrap_or_default().to_string(),
                params: message.get("params").cloned().unwrap_or(Value::Null),
            }),
        }
        drop(inbox);
        shared.arrived.notify_all();
    }
    shared.inbox.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
    shared.arrived.notify_all();
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for group in bytes.chunks(4) {
        let mut accumulator = 0u32;
        for (i, &c) in group.iter().enumerate() {
            accumulator |= value(c)? << (18 - 6 * i);
        }
        let produced = match group.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&accumulator.to_be_bytes()[1..1 + produced]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert!(base64_decode("a$==").is_none());
    }

    #[test]
    fn file_urls_percent_encode_spaces_and_non_ascii() {
        assert_eq!(file_url(Path::new("/no/such/dir/a b/é.html")), "file:///no/such/dir/a%20b/%C3%A9.html");
    }
}
