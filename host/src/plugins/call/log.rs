//! What one call may log: the `log` import, stdout and stderr share one cap of lines and bytes
//! per call; past it lines are counted and dropped, except the panic hook's last line.

use crate::plugins::bindings::nebucloud::xds::types::Level;

/// The most log lines one call keeps, from every path together.
pub(crate) const MAX_LOG_LINES: usize = 64;
/// The most bytes of log lines one call keeps, from every path together.
pub(crate) const MAX_LOG_BYTES: usize = 64 << 10;
/// The longest log line kept, in bytes: a longer one is cut.
pub(crate) const MAX_LOG_LINE: usize = 4096;
/// How the SDK's panic hook starts the line it logs.
pub(crate) const PANIC_PREFIX: &str = "panicked at ";

/// The log of one call: what it kept, what it dropped, and the lines not yet ended.
#[derive(Debug, Default)]
pub(crate) struct CallLog {
    lines: usize,
    bytes: usize,
    dropped: usize,
    /// The last panic line that came past the cap. The panic hook's line is what explains the
    /// trap that follows it, so one is kept (logged when the call ends); any other is dropped.
    late_panic: Option<String>,
    /// Error lines kept, in order.
    errors: Vec<String>,
    /// What the plugin wrote to stdout (0) and stderr (1) after its last newline.
    stdio: [String; 2],
}

impl CallLog {
    /// Decides one line's fate: `Some` (cut to [`MAX_LOG_LINE`]) to log now, `None` when it
    /// is past the call's cap (counted as dropped; a panic line is held for [`Self::finish`]).
    pub(crate) fn admit<'m>(&mut self, level: Level, message: &'m str) -> Option<&'m str> {
        let line = cut(message, MAX_LOG_LINE);
        if self.full() || self.bytes + line.len() > MAX_LOG_BYTES {
            let panic = level == Level::Error && line.starts_with(PANIC_PREFIX);
            if !panic || self.late_panic.replace(line.to_owned()).is_some() {
                self.dropped += 1;
            }
            return None;
        }
        self.lines += 1;
        self.bytes += line.len();
        if level == Level::Error {
            self.errors.push(line.to_owned());
        }
        Some(line)
    }

    /// Text written to stdout or stderr: each complete line is admitted (info for stdout,
    /// warning for stderr) and handed to `emit`; the rest waits for its newline, for one log
    /// line's worth, or for [`Self::finish`]. Past the cap only the newlines are counted.
    pub(crate) fn stdio_write(
        &mut self,
        stderr: bool,
        bytes: &[u8],
        mut emit: impl FnMut(Level, &str),
    ) {
        if self.full() {
            self.dropped += bytes.iter().filter(|&&b| b == b'\n').count();
            return;
        }
        let i = usize::from(stderr);
        let mut pending = std::mem::take(&mut self.stdio[i]);
        pending.push_str(&String::from_utf8_lossy(bytes));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            self.stdio_line(stderr, line.trim_end_matches(['\n', '\r']), &mut emit);
        }
        if pending.len() >= MAX_LOG_LINE {
            self.stdio_line(stderr, &pending, &mut emit);
            pending.clear();
        }
        self.stdio[i] = pending;
    }

    /// Ends the call's log: hands what stdout and stderr wrote without a final newline and the
    /// held panic line to `emit`, and returns how many lines were dropped.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(Level, &str)) -> usize {
        for stderr in [false, true] {
            let pending = std::mem::take(&mut self.stdio[usize::from(stderr)]);
            self.stdio_line(stderr, &pending, &mut emit);
        }
        if let Some(panic) = self.late_panic.take() {
            emit(Level::Error, &panic);
            self.errors.push(panic);
        }
        self.dropped
    }

    /// The last panic hook line this call logged.
    pub(crate) fn panic_line(&self) -> Option<&str> {
        self.errors
            .iter()
            .rev()
            .find(|l| l.starts_with(PANIC_PREFIX))
            .map(String::as_str)
    }

    /// Whether the call's cap of lines or bytes is reached.
    fn full(&self) -> bool {
        self.lines >= MAX_LOG_LINES || self.bytes >= MAX_LOG_BYTES
    }

    fn stdio_line(&mut self, stderr: bool, line: &str, emit: &mut impl FnMut(Level, &str)) {
        if line.is_empty() {
            return;
        }
        let level = if stderr { Level::Warn } else { Level::Info };
        if let Some(line) = self.admit(level, line) {
            emit(level, line);
        }
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admits `n` lines of `len` bytes at `level`; returns how many were let through.
    fn flood(log: &mut CallLog, level: Level, n: usize, line: &str) -> usize {
        (0..n).filter(|_| log.admit(level, line).is_some()).count()
    }

    #[test]
    fn an_error_flood_is_capped_counted_and_keeps_only_the_last_panic_line() {
        let mut log = CallLog::default();
        assert_eq!(flood(&mut log, Level::Error, 10_000, "boom"), MAX_LOG_LINES);
        // Panic lines past the cap: only the last one is kept, for the end of the call.
        assert_eq!(flood(&mut log, Level::Error, 100, "panicked at fake"), 0);
        assert!(log
            .admit(Level::Error, "panicked at src/lib.rs:1: real")
            .is_none());
        let mut emitted = Vec::new();
        let dropped = log.finish(|level, line| emitted.push((level, line.to_owned())));
        assert_eq!(
            emitted,
            vec![(Level::Error, "panicked at src/lib.rs:1: real".to_owned())]
        );
        assert_eq!(dropped, 10_000 - MAX_LOG_LINES + 100);
        assert_eq!(log.errors.len(), MAX_LOG_LINES + 1);
        assert_eq!(log.panic_line(), Some("panicked at src/lib.rs:1: real"));
    }

    #[test]
    fn lines_are_cut_and_the_call_keeps_at_most_its_bytes() {
        let mut log = CallLog::default();
        let long = "é".repeat(MAX_LOG_LINE);
        assert_eq!(
            log.admit(Level::Info, &long).map(str::len),
            Some(MAX_LOG_LINE)
        );
        let kept = flood(&mut log, Level::Warn, 100, &"x".repeat(MAX_LOG_LINE));
        assert_eq!(kept, MAX_LOG_BYTES / MAX_LOG_LINE - 1);
        assert!(log.bytes <= MAX_LOG_BYTES);
        assert_eq!(log.finish(|_, _| {}), 100 - kept);
    }

    #[test]
    fn stdout_and_stderr_share_the_cap_and_their_dropped_lines_are_counted() {
        let mut log = CallLog::default();
        let mut emitted = 0;
        for _ in 0..100 {
            log.stdio_write(true, b"one\ntwo\n", |_, _| emitted += 1);
        }
        assert_eq!(emitted, MAX_LOG_LINES);
        assert_eq!(flood(&mut log, Level::Info, 1, "after"), 0);
        assert_eq!(log.finish(|_, _| emitted += 1), 200 - MAX_LOG_LINES + 1);
        assert_eq!(emitted, MAX_LOG_LINES);
    }
}
