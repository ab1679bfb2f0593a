//! Scorer programs: a user's reward as a long-lived process speaking one JSON object per line
//! (`clipo-verify --scorer 'CMD ARGS'`; the protocol in words, with an example, is
//! schemas/scorer.md).
//!
//! - The command line runs under `sh -c` (quotes, `$VARS` and pipes as in a shell), in its own
//!   process group, with `PYTHONUNBUFFERED=1` so that a Python scorer's `print` reaches us
//!   without a flush.
//! - Requests are written as fast as the program reads them (a writer thread), answers read in
//!   order. A response's time runs from the previous answer, or from the program's start for
//!   its first: past `timeout` the whole process group is killed, the response scores 0 with
//!   reason `timeout`, and a fresh process takes the rest. [`MAX_CONSECUTIVE_TIMEOUTS`] in a
//!   row mean the program does not answer at all: an error.
//! - An answer must be a JSON object with a finite number `score`; `correct` (bool, default
//!   `score > 0`), `extracted` (text; other JSON values are kept as their JSON text) and
//!   `reason` (text, default `correct` / `incorrect`) are optional; `prompt_id` and
//!   `sample_idx`, when answered, must be the request's (so an answer out of order is caught);
//!   every other key goes into the `extra` column as one JSON object.
//! - The program exiting before it has answered every response, a line that is not such an
//!   object, an answer for another response, or more lines than requests are errors naming the
//!   input row, with the last lines of the program's stderr. Nothing is written then.
//! - `workers` processes share the rows (contiguous slices, so each sees its rows in order);
//!   when one fails the others are stopped.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Scored;
use crate::error::{Error, Result};

/// Timeouts in a row (in one worker) after which the program counts as not answering.
pub const MAX_CONSECUTIVE_TIMEOUTS: usize = 3;
/// Lines of the program's stderr quoted in an error.
const STDERR_TAIL: usize = 20;
/// How long a program may take to exit once its stdin is closed after the last answer.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How often a waiting worker checks whether another one failed.
const POLL: Duration = Duration::from_millis(100);

/// A scorer program and how it is run.
#[derive(Debug, Clone)]
pub struct Program {
    /// The command line (run with `sh -c`).
    pub command: String,
    /// Processes run side by side (at least 1).
    pub workers: usize,
    /// Longest wait for one answer.
    pub timeout: Duration,
}

/// One response as the program receives it: one JSON line.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    pub data_source: &'a str,
    pub prompt_id: &'a str,
    pub sample_idx: u32,
    pub response_text: &'a str,
    pub ground_truth: &'a str,
    pub extra_info: &'a serde_json::Value,
}

/// A request ready to send: the input row it came from, its key, its JSON line.
#[derive(Debug, Clone)]
pub struct Job {
    pub row: usize,
    pub prompt_id: String,
    pub sample_idx: u32,
    pub line: String,
}

impl Job {
    pub fn new(row: usize, request: &Request) -> Job {
        Job {
            row,
            prompt_id: request.prompt_id.to_string(),
            sample_idx: request.sample_idx,
            line: serde_json::to_string(request).expect("a request serialises"),
        }
    }
}

impl Job {
    /// An error about this job's response.
    fn error(&self, command: &str, detail: String) -> Error {
        Error::Scorer { command: command.to_string(), row: self.row, prompt_id: self.prompt_id.clone(), sample_idx: self.sample_idx, detail }
    }
}

/// The answer of a response that timed out.
pub fn timed_out(timeout: Duration) -> Scored {
    Scored {
        extracted: None,
        correct: false,
        score: 0.0,
        reason: "timeout".into(),
        extra: Some(serde_json::json!({ "timeout_s": timeout.as_secs_f64() }).to_string()),
    }
}

/// Scores every job with `program`; answers in job order. On any error nothing is returned.
pub fn score(program: &Program, jobs: &[Job]) -> Result<Vec<Scored>> {
    if jobs.is_empty() {
        return Ok(vec![]);
    }
    let jobs = Arc::new(jobs.to_vec());
    let workers = program.workers.clamp(1, jobs.len());
    let chunk = jobs.len().div_ceil(workers);
    let abort = AtomicBool::new(false);
    let results: Vec<std::result::Result<Vec<Scored>, Failure>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..jobs.len())
            .step_by(chunk)
            .map(|lo| {
                let (hi, jobs, abort) = ((lo + chunk).min(jobs.len()), jobs.clone(), &abort);
                s.spawn(move || {
                    let r = Worker { program, jobs, lo, hi, abort }.run();
                    if r.is_err() {
                        abort.store(true, Ordering::SeqCst);
                    }
                    r
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a scorer worker does not panic")).collect()
    });
    // The failure of the earliest row is the one reported (others were stopped by it).
    let mut out = Vec::with_capacity(jobs.len());
    let mut first: Option<Error> = None;
    for r in results {
        match r {
            Ok(v) => out.extend(v),
            Err(Failure::Stopped) => {}
            Err(Failure::Failed(e)) => {
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None if out.len() == jobs.len() => Ok(out),
        None => Err(Error::Other(format!("scorer `{}`: stopped without an error", program.command))),
    }
}

enum Failure {
    /// Another worker failed first.
    Stopped,
    Failed(Error),
}

/// What the threads around a process report.
enum Msg {
    Line(Vec<u8>),
    Eof,
}

/// One running process: its stdout lines arrive on `lines`, the tail of its stderr in `stderr`.
struct Process {
    child: Child,
    lines: Receiver<Msg>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    stderr_done: Receiver<()>,
    started: Instant,
}

impl Process {
    /// Starts the program and a writer thread that sends `jobs[lo..hi]`.
    fn spawn(program: &Program, jobs: Arc<Vec<Job>>, lo: usize, hi: usize) -> Result<Process> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&program.command)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| jobs[lo].error(&program.command, format!("cannot start `sh -c`: {e}")))?;
        let (mut stdin, stdout, mut stderr) =
            (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        // The writer: a program that dies or is killed makes the write fail (EPIPE; Rust
        // ignores SIGPIPE), which ends the thread. Dropping stdin closes it: end of input.
        std::thread::spawn(move || {
            let mut w = std::io::BufWriter::with_capacity(1 << 16, &mut stdin);
            for j in &jobs[lo..hi] {
                if w.write_all(j.line.as_bytes()).and_then(|_| w.write_all(b"\n")).is_err() {
                    return;
                }
            }
            let _ = w.flush();
        });
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 16, stdout);
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Msg::Eof);
                        return;
                    }
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if tx.send(Msg::Line(line)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (done_tx, stderr_done) = channel();
        let keep = tail.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let mut buf = [0u8; 8192];
            // Whole lines into the tail; the tail itself bounded.
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                bytes.extend_from_slice(&buf[..n]);
                while let Some(at) = bytes.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = bytes.drain(..=at).collect();
                    push_tail(&keep, String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
                }
                if bytes.len() > 1 << 16 {
                    push_tail(&keep, String::from_utf8_lossy(&std::mem::take(&mut bytes)).into_owned());
                }
            }
            if !bytes.is_empty() {
                push_tail(&keep, String::from_utf8_lossy(&bytes).into_owned());
            }
            let _ = done_tx.send(());
        });
        Ok(Process { child, lines, stderr: tail, stderr_done, started: Instant::now() })
    }

    /// Kills the whole process group (`sh` and what it started) and reaps `sh`.
    fn kill(&mut self) {
        // SAFETY: kill(2) on our own child's process group; no memory is involved.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    /// How the program ended (it closed its stdout), waiting for it briefly.
    fn exit_status(&mut self) -> String {
        let deadline = Instant::now() + EXIT_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    return match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                        (Some(c), _) => format!("exited with status {c}"),
                        (None, Some(sig)) => format!("was killed by signal {sig}"),
                        _ => format!("ended ({s})"),
                    }
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    self.kill();
                    return "closed its stdout".into();
                }
            }
        }
    }

    /// The last lines of its stderr, indented, after it has ended.
    fn stderr_tail(&self) -> String {
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(1));
        let tail = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        if tail.is_empty() {
            return "; it wrote nothing on stderr".into();
        }
        format!("; the last lines of its stderr:\n{}", tail.iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

fn push_tail(tail: &Mutex<VecDeque<String>>, line: String) {
    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
    if t.len() == STDERR_TAIL {
        t.pop_front();
    }
    t.push_back(line);
}

/// One worker: the jobs `lo..hi`, one process at a time.
struct Worker<'a> {
    program: &'a Program,
    jobs: Arc<Vec<Job>>,
    lo: usize,
    hi: usize,
    abort: &'a AtomicBool,
}

impl Worker<'_> {
    fn fail(&self, job: &Job, detail: String) -> Failure {
        Failure::Failed(job.error(&self.program.command, detail))
    }

    fn run(self) -> std::result::Result<Vec<Scored>, Failure> {
        let mut out: Vec<Scored> = Vec::with_capacity(self.hi - self.lo);
        let mut timeouts_in_a_row = 0;
        while self.lo + out.len() < self.hi {
            let first = self.lo + out.len();
            let mut p = Process::spawn(self.program, self.jobs.clone(), first, self.hi).map_err(Failure::Failed)?;
            let mut since = p.started;
            // Answers until a timeout (then a fresh process) or the end.
            loop {
                let at = self.lo + out.len();
                if at == self.hi {
                    self.finish(&mut p)?;
                    break;
                }
                let job = &self.jobs[at];
                let left = self.program.timeout.saturating_sub(since.elapsed());
                match p.lines.recv_timeout(left.min(POLL)) {
                    Ok(Msg::Line(line)) => {
                        let answer = parse_answer(&line, job).map_err(|d| {
                            p.kill();
                            self.fail(job, d)
                        })?;
                        out.push(answer);
                        timeouts_in_a_row = 0;
                        since = Instant::now();
                    }
                    Ok(Msg::Eof) | Err(RecvTimeoutError::Disconnected) => {
                        let how = p.exit_status();
                        let answered = at - first;
                        return Err(self.fail(
                            job,
                            format!(
                                "the program {how} before answering this response (this process answered {answered} of the {} it was sent){}",
                                self.hi - first,
                                p.stderr_tail()
                            ),
                        ));
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        if self.abort.load(Ordering::SeqCst) {
                            p.kill();
                            return Err(Failure::Stopped);
                        }
                        if since.elapsed() < self.program.timeout {
                            continue;
                        }
                        p.kill();
                        out.push(timed_out(self.program.timeout));
                        timeouts_in_a_row += 1;
                        if timeouts_in_a_row == MAX_CONSECUTIVE_TIMEOUTS {
                            let rows: Vec<String> = self.jobs[at + 1 - MAX_CONSECUTIVE_TIMEOUTS..=at].iter().map(|j| j.row.to_string()).collect();
                            return Err(self.fail(
                                job,
                                format!(
                                    "no answer within {:.1} s to {MAX_CONSECUTIVE_TIMEOUTS} responses in a row (rows {}): the program does not answer; \
                                     it must print one line per request and flush it (python: print(..., flush=True)){}",
                                    self.program.timeout.as_secs_f64(),
                                    rows.join(", "),
                                    p.stderr_tail()
                                ),
                            ));
                        }
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// After the last answer: stdin is closed (the writer is done); the program should exit
    /// without another line.
    fn finish(&self, p: &mut Process) -> std::result::Result<(), Failure> {
        match p.lines.recv_timeout(EXIT_GRACE.min(self.program.timeout)) {
            Ok(Msg::Line(line)) => {
                let job = &self.jobs[self.hi - 1];
                p.kill();
                Err(self.fail(
                    job,
                    format!(
                        "the program answered more lines than it was sent: after the answer to this response (the last it was sent) came `{}`",
                        excerpt(&line)
                    ),
                ))
            }
            // Ended, or still running: either way its answers are all in.
            _ => {
                p.kill();
                Ok(())
            }
        }
    }
}

/// A line as it appears in an error: lossy UTF-8, at most 200 characters.
fn excerpt(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    let mut e: String = s.chars().take(200).collect();
    if s.chars().count() > 200 {
        e.push('…');
    }
    e
}

/// Reads one answer line (the protocol in the module doc).
pub fn parse_answer(line: &[u8], job: &Job) -> std::result::Result<Scored, String> {
    let not_an_answer = |why: &str| {
        format!(
            "the answer `{}` {why}; a scorer prints exactly one JSON object per request on stdout, e.g. {{\"score\": 1.0}} \
             (debugging output goes to stderr)",
            excerpt(line)
        )
    };
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| not_an_answer(&format!("is not JSON ({e})")))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(not_an_answer("is not a JSON object"));
    };
    // The echo of the request's key, when the program gives it: a check of the order.
    let pid = map.remove("prompt_id");
    let sid = map.remove("sample_idx");
    let key_ok = pid.as_ref().is_none_or(|p| p.as_str() == Some(job.prompt_id.as_str()))
        && sid.as_ref().is_none_or(|s| s.as_u64() == Some(u64::from(job.sample_idx)));
    if !key_ok {
        return Err(format!(
            "answered out of order: the answer is for prompt_id {}, sample_idx {} (answers must come in the order of the requests)",
            pid.map_or("-".into(), |p| p.to_string()),
            sid.map_or("-".into(), |s| s.to_string())
        ));
    }
    let score = match map.remove("score") {
        None => return Err(not_an_answer("has no `score`")),
        Some(v) => v.as_f64().ok_or_else(|| not_an_answer("has a `score` that is not a number"))?,
    };
    let score32 = score as f32;
    if !score32.is_finite() {
        return Err(not_an_answer("has a `score` outside the finite f32 range"));
    }
    let correct = match map.remove("correct") {
        None | Some(serde_json::Value::Null) => score > 0.0,
        Some(serde_json::Value::Bool(b)) => b,
        Some(_) => return Err(not_an_answer("has a `correct` that is not true or false")),
    };
    let extracted = match map.remove("extracted") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(v) => Some(v.to_string()),
    };
    let reason = match map.remove("reason") {
        None | Some(serde_json::Value::Null) => if correct { "correct" } else { "incorrect" }.to_string(),
        Some(serde_json::Value::String(s)) => s,
        Some(v) => v.to_string(),
    };
    let extra = (!map.is_empty()).then(|| serde_json::Value::Object(map).to_string());
    Ok(Scored { extracted, correct, score: score32, reason, extra })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job { row: 4, prompt_id: "p".into(), sample_idx: 2, line: String::new() }
    }

    #[test]
    fn answers_are_read_with_defaults_and_extra_keys() {
        let a = parse_answer(br#"{"score": 0.5}"#, &job()).unwrap();
        assert_eq!((a.score, a.correct, a.reason.as_str(), a.extracted, a.extra), (0.5, true, "correct", None, None));
        let a = parse_answer(br#"{"score": -1, "correct": true, "extracted": 42, "reason": "r", "prompt_id": "p", "sample_idx": 2, "tests": [1, 0]}"#, &job()).unwrap();
        assert_eq!((a.score, a.correct, a.reason.as_str(), a.extracted.as_deref()), (-1.0, true, "r", Some("42")));
        assert_eq!(a.extra.as_deref(), Some(r#"{"tests":[1,0]}"#));
        assert_eq!(parse_answer(br#"{"score": 0}"#, &job()).unwrap().reason, "incorrect");
    }

    #[test]
    fn bad_answers_are_named() {
        let e = |l: &[u8]| parse_answer(l, &job()).unwrap_err();
        assert!(e(b"hello").contains("is not JSON"), "{}", e(b"hello"));
        assert!(e(b"[1]").contains("not a JSON object"));
        assert!(e(br#"{"correct": true}"#).contains("has no `score`"));
        assert!(e(br#"{"score": "1"}"#).contains("not a number"));
        assert!(e(br#"{"score": 1e300}"#).contains("finite f32"));
        assert!(e(br#"{"score": NaN}"#).contains("is not JSON"));
        assert!(e(br#"{"score": 1, "correct": 1}"#).contains("`correct`"));
        assert!(e(br#"{"score": 1, "sample_idx": 3}"#).contains("out of order"));
        assert!(e(br#"{"score": 1, "prompt_id": "q"}"#).contains("out of order"));
    }
}
