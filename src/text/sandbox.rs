//! Extraction in a child process (`ragbox extract`) with an address-space limit, a
//! CPU-time limit and a wall-clock timeout. Whatever a document does to a parser (a
//! stack overflow, an endless loop, a decompression bomb) ends that child, never the
//! server; the parent turns it into a reason the operator can read.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::extract::{self, ExtractError, Kind};

/// The child's exit code for a document it could read but refuses (empty, undecodable).
const REFUSED: u8 = 3;
/// The child's exit code for a bad command line or limits it could not apply.
const USAGE: u8 = 2;
/// The most of the child's stderr kept for the reason.
const STDERR_KEPT: u64 = 4096;

/// Limits on one extraction.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The executable to run as `<program> extract` (ragbox itself).
    pub program: PathBuf,
    /// Address space of the child, in bytes.
    pub memory_bytes: u64,
    /// CPU time of the child, in seconds.
    pub cpu_secs: u64,
    /// Wall-clock time before the child is killed.
    pub timeout: Duration,
    /// Extracted text longer than this fails the document.
    pub max_text_bytes: u64,
}

/// Why an isolated extraction produced no text.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The document itself: unreadable, empty, over a limit, or it crashed the parser.
    #[error("{0}")]
    Document(String),
    /// Stopped because the caller cancelled it (the document was deleted).
    #[error("extraction cancelled")]
    Cancelled,
    /// The child could not be started (a deployment problem, worth a retry).
    #[error("the extraction process could not run: {0}")]
    Spawn(String),
}

/// Extracts `bytes` under `limits`: plain text and Markdown here (checking UTF-8 and
/// dropping control characters is one linear pass with nothing to exploit, and a child
/// would cost more than the pass), every other kind in a child process.
pub async fn extract(
    kind: Kind,
    bytes: Vec<u8>,
    limits: &Limits,
    cancel: &CancellationToken,
) -> Result<String, SandboxError> {
    if !matches!(kind, Kind::Text | Kind::Markdown) {
        return extract_isolated(kind, bytes, limits, cancel).await;
    }
    let cap = limits.max_text_bytes;
    let text = tokio::task::spawn_blocking(move || extract::extract(kind, &bytes))
        .await
        .map_err(|e| SandboxError::Spawn(format!("the extraction task failed: {e}")))?
        .map_err(|e| SandboxError::Document(e.to_string()))?;
    if text.len() as u64 > cap {
        return Err(SandboxError::Document(format!(
            "the extracted text is larger than the limit of {cap} bytes"
        )));
    }
    Ok(text)
}

/// Extracts `bytes` in a child process under `limits`; `cancel` kills it early.
pub async fn extract_isolated(
    kind: Kind,
    bytes: Vec<u8>,
    limits: &Limits,
    cancel: &CancellationToken,
) -> Result<String, SandboxError> {
    let mut child = tokio::process::Command::new(&limits.program)
        .arg("extract")
        .arg("--kind")
        .arg(kind.name())
        .arg("--memory-bytes")
        .arg(limits.memory_bytes.to_string())
        .arg("--cpu-secs")
        .arg(limits.cpu_secs.to_string())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SandboxError::Spawn(format!("{}: {e}", limits.program.display())))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(SandboxError::Spawn("the child's pipes are missing".into()));
    };
    // The input is written beside the reads, so a child that stops reading cannot
    // stall the parent.
    let feed = async move {
        let _ = stdin.write_all(&bytes).await;
        drop(stdin);
    };
    let cap = limits.max_text_bytes;
    let read_out = async move {
        let mut out = Vec::new();
        let read = stdout.take(cap + 1).read_to_end(&mut out).await;
        read.map(|_| out)
    };
    let read_err = async move {
        let mut err = Vec::new();
        let _ = stderr.take(STDERR_KEPT).read_to_end(&mut err).await;
        err
    };
    let work = async {
        let ((), out, err) = tokio::join!(feed, read_out, read_err);
        let out = out.map_err(|e| SandboxError::Spawn(format!("reading its output: {e}")))?;
        if out.len() as u64 > cap {
            return Ok(Err(SandboxError::Document(format!(
                "the extracted text is larger than the limit of {cap} bytes"
            ))));
        }
        let status = child
            .wait()
            .await
            .map_err(|e| SandboxError::Spawn(format!("waiting for it: {e}")))?;
        Ok(Ok((status, out, err)))
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout(limits.timeout, work) => r,
        _ = cancel.cancelled() => return Err(SandboxError::Cancelled),
    };
    // Leaving this function drops (and so kills) a child that is still running.
    let (status, out, err) = match outcome {
        Err(_) => {
            return Err(SandboxError::Document(format!(
                "extraction took longer than {} s and was stopped",
                limits.timeout.as_secs()
            )));
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Err(e))) => return Err(e),
        Ok(Ok(Ok(done))) => done,
    };
    let said = String::from_utf8_lossy(&err).trim().to_owned();
    if status.success() {
        return String::from_utf8(out)
            .map_err(|_| SandboxError::Document("the extracted text is not UTF-8".into()));
    }
    Err(SandboxError::Document(describe_exit(status, &said, limits)))
}

fn describe_exit(status: std::process::ExitStatus, said: &str, limits: &Limits) -> String {
    use std::os::unix::process::ExitStatusExt;
    let first_line = said.lines().next().unwrap_or("").chars().take(500);
    let said: String = first_line.collect();
    if let Some(signal) = status.signal() {
        let why = if said.contains("overflowed its stack") {
            "it overflowed its stack (content that nests or refers to itself without end)"
                .to_owned()
        } else if said.contains("memory allocation") {
            format!(
                "it needed more than the memory limit of {} MiB",
                limits.memory_bytes / (1024 * 1024)
            )
        } else {
            match signal {
                9 | 24 => format!(
                    "it ran past its CPU-time limit of {} s or was killed",
                    limits.cpu_secs
                ),
                11 | 7 => "it crashed (for example a stack overflow on deep nesting)".to_owned(),
                6 => "it aborted".to_owned(),
                _ => "it was stopped by a signal".to_owned(),
            }
        };
        return format!("the document could not be extracted: {why} (signal {signal})");
    }
    match status.code() {
        Some(code) if code == i32::from(REFUSED) && !said.is_empty() => said,
        Some(code) if said.contains("memory allocation") => format!(
            "the document could not be extracted: it needed more than the memory limit of {} MiB (exit {code})",
            limits.memory_bytes / (1024 * 1024)
        ),
        Some(code) => format!("the document could not be extracted (exit {code}): {said}"),
        None => format!("the document could not be extracted: {said}"),
    }
}

/// The child's side (`ragbox extract`): limits itself, reads the document from stdin,
/// writes its text to stdout. Exit 0 with the text; 3 with the reason on stderr for a
/// document that has no text; 2 for a bad invocation.
pub fn run_child(kind: &str, memory_bytes: u64, cpu_secs: u64) -> ExitCode {
    let Some(kind) = Kind::from_name(kind) else {
        eprintln!("unknown kind `{kind}`");
        return ExitCode::from(USAGE);
    };
    if let Err(e) = limit_self(memory_bytes, cpu_secs) {
        eprintln!("could not apply the limits: {e}");
        return ExitCode::from(USAGE);
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut bytes) {
        eprintln!("reading the document: {e}");
        return ExitCode::from(USAGE);
    }
    match extract::extract(kind, &bytes) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::from(USAGE);
            }
            ExitCode::SUCCESS
        }
        Err(
            e @ (ExtractError::Empty | ExtractError::Undecodable(_) | ExtractError::Unsupported(_)),
        ) => {
            eprintln!("{e}");
            ExitCode::from(REFUSED)
        }
    }
}

fn limit_self(memory_bytes: u64, cpu_secs: u64) -> std::io::Result<()> {
    use rlimit::Resource;
    Resource::AS.set(memory_bytes, memory_bytes)?;
    // SIGXCPU at the soft limit, SIGKILL a second later.
    Resource::CPU.set(cpu_secs, cpu_secs + 1)?;
    Resource::CORE.set(0, 0)?;
    // It writes no files: stdout is a pipe.
    Resource::FSIZE.set(0, 0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(cap: u64) -> Limits {
        Limits {
            program: "/nonexistent/ragbox".into(),
            memory_bytes: 1 << 30,
            cpu_secs: 10,
            timeout: Duration::from_secs(10),
            max_text_bytes: cap,
        }
    }

    #[tokio::test]
    async fn plain_text_is_read_here_under_the_same_cap_and_reasons() {
        let none = CancellationToken::new();
        // No child can start (the program does not exist), yet text and Markdown are read.
        let text = extract(Kind::Text, b"one\r\ntwo\x07".to_vec(), &limits(100), &none)
            .await
            .unwrap();
        assert_eq!(text, "one\ntwo");
        let md = extract(Kind::Markdown, b"# Title".to_vec(), &limits(100), &none).await;
        assert_eq!(md.unwrap(), "# Title");
        // HTML still goes to the child.
        let html = extract(Kind::Html, b"<p>x</p>".to_vec(), &limits(100), &none).await;
        assert!(matches!(html, Err(SandboxError::Spawn(_))), "{html:?}");
        let big = extract(Kind::Text, vec![b'a'; 101], &limits(100), &none).await;
        assert!(
            matches!(&big, Err(SandboxError::Document(m)) if m.contains("larger than the limit")),
            "{big:?}"
        );
        let blank = extract(Kind::Text, b" \n\t ".to_vec(), &limits(100), &none).await;
        assert!(matches!(blank, Err(SandboxError::Document(_))), "{blank:?}");
        let bad = extract(Kind::Text, vec![0xff, 0xfe], &limits(100), &none).await;
        assert!(
            matches!(&bad, Err(SandboxError::Document(m)) if m.contains("UTF-8")),
            "{bad:?}"
        );
    }
}
