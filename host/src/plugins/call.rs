//! The state of one plugin call inside its store: the limits, the inputs it may read (and
//! the record of what it read), and what it logged.

use std::sync::Arc;

use wasmtime::component::HasSelf;

use super::bindings::nebucloud::xds::{host, types};
use super::inputs::{InputView, Reads};
use super::limits::MemoryCap;

/// The most log lines one call keeps (each also goes to the host log at once).
const MAX_LOG_LINES: usize = 64;
/// How the SDK's panic hook starts the line it logs.
pub(crate) const PANIC_PREFIX: &str = "panicked at ";
/// The longest log line kept, in bytes.
const MAX_LOG_LINE: usize = 4096;

/// Store data: everything a host import may touch during one call.
pub(crate) struct CallState {
    pub(crate) plugin: Arc<str>,
    pub(crate) node: String,
    pub(crate) memory: MemoryCap,
    pub(crate) inputs: Arc<dyn InputView>,
    pub(crate) reads: Reads,
    /// Lines logged at error level: a panic hook's message is the last of them.
    pub(crate) errors: Vec<String>,
    log_lines: usize,
    /// What the plugin wrote to stdout (0) and stderr (1) after its last newline.
    stdio: [String; 2],
}

impl CallState {
    pub(crate) fn new(plugin: Arc<str>, memory_limit: usize, inputs: Arc<dyn InputView>) -> Self {
        CallState {
            plugin,
            node: String::new(),
            memory: MemoryCap {
                limit: memory_limit,
                exceeded: None,
                peak: 0,
            },
            inputs,
            reads: Reads::default(),
            errors: Vec::new(),
            log_lines: 0,
            stdio: [String::new(), String::new()],
        }
    }

    /// Resets the per-call parts before a call on a (possibly reused) instance.
    pub(crate) fn begin(&mut self, node: &str, inputs: Arc<dyn InputView>) {
        self.node = node.to_owned();
        self.inputs = inputs;
        self.reads = Reads::default();
        self.errors.clear();
        self.log_lines = 0;
        self.memory.exceeded = None;
        self.stdio = [String::new(), String::new()];
    }

    /// Text the plugin wrote to stdout or stderr: each complete line becomes a log line (info
    /// for stdout, warning for stderr); the rest waits for its newline, for one log line's
    /// worth, or for the end of the call ([`CallState::flush_stdio`]).
    pub(crate) fn stdio_write(&mut self, stderr: bool, bytes: &[u8]) {
        if self.log_lines >= MAX_LOG_LINES {
            return;
        }
        let i = usize::from(stderr);
        let mut pending = std::mem::take(&mut self.stdio[i]);
        pending.push_str(&String::from_utf8_lossy(bytes));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            self.stdio_line(stderr, line.trim_end_matches(['\n', '\r']));
        }
        if pending.len() >= MAX_LOG_LINE {
            self.stdio_line(stderr, &pending);
            pending.clear();
        }
        self.stdio[i] = pending;
    }

    /// Logs what the plugin wrote without a final newline (at the end of a call or `init`).
    pub(crate) fn flush_stdio(&mut self) {
        for stderr in [false, true] {
            let pending = std::mem::take(&mut self.stdio[usize::from(stderr)]);
            self.stdio_line(stderr, &pending);
        }
    }

    fn stdio_line(&mut self, stderr: bool, line: &str) {
        if line.is_empty() {
            return;
        }
        let level = if stderr {
            types::Level::Warn
        } else {
            types::Level::Info
        };
        host::Host::log(self, level, line.to_owned());
    }
}

impl types::Host for CallState {}

impl host::Host for CallState {
    fn log(&mut self, level: types::Level, message: String) {
        self.log_lines += 1;
        // A panic hook's line is what explains a trap: it is kept past the line cap.
        let panic = level == types::Level::Error && message.starts_with(PANIC_PREFIX);
        if self.log_lines > MAX_LOG_LINES && !panic {
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let (plugin, node) = (&*self.plugin, self.node.as_str());
        match level {
            types::Level::Trace => tracing::trace!(plugin, node, "{message}"),
            types::Level::Debug => tracing::debug!(plugin, node, "{message}"),
            types::Level::Info => tracing::info!(plugin, node, "{message}"),
            types::Level::Warn => tracing::warn!(plugin, node, "{message}"),
            types::Level::Error => {
                tracing::error!(plugin, node, "{message}");
                self.errors.push(message);
            }
        }
    }

    fn get(&mut self, kind: String, name: String) -> Option<types::Document> {
        let doc = self.inputs.get(&kind, &name);
        self.reads.documents.insert((kind, name));
        doc.map(|d| types::Document {
            kind: d.kind,
            name: d.name,
            json: d.json.to_string(),
        })
    }

    fn list(&mut self, kind: String) -> Vec<types::Document> {
        let docs = self.inputs.list(&kind);
        self.reads.kinds.insert(kind);
        docs.into_iter()
            .map(|d| types::Document {
                kind: d.kind,
                name: d.name,
                json: d.json.to_string(),
            })
            .collect()
    }
}

/// Adds the contract's imports to a linker.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<CallState>,
) -> wasmtime::Result<()> {
    super::bindings::Plugin::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
}
