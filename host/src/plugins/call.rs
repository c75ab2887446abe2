//! The state of one plugin call inside its store, and the host calls that reach it (`log`,
//! `get`, `list`): each under the call's budgets, and a call past one fails with it.

mod log;
mod node;
mod tally;

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, WasmStr};
use wasmtime::StoreContextMut;

use super::bindings::nebucloud::xds::types::{self, Document as WitDocument, Level};
use super::bindings::v1;
use super::limits::{MemoryCap, PluginLimits, MAX_KIND_BYTES, MAX_NAME_BYTES};
use super::node::{NodeReads, NodeView};
use super::plugin::{PluginFault, HOST_V1, HOST_V2};
use crate::inputs::{DocKey, Document, InputView, Reads};
use log::{cut, CallLog, MAX_LOG_BYTES, MAX_LOG_LINE, MAX_LOG_LINES};
use tally::{HostCall, HostCallTally};

/// Store data: everything a host import may touch during one call.
pub(crate) struct CallState {
    pub(crate) plugin: Arc<str>,
    /// The node's id, for log lines.
    pub(crate) node: String,
    /// The node of this call (none in `init`).
    subject: Option<Arc<NodeView>>,
    /// Which of its fields this call read.
    pub(crate) node_reads: NodeReads,
    pub(crate) memory: MemoryCap,
    limits: PluginLimits,
    inputs: Arc<dyn InputView>,
    /// What this call read: its kinds and names count against `max_reads`/`max_read_bytes`.
    pub(crate) reads: Reads,
    read_bytes: usize,
    /// Bytes of documents handed to this call, against `max_document_bytes`.
    document_bytes: usize,
    /// The budget a host call of this call went past: the call fails with it.
    pub(crate) refused: Option<PluginFault>,
    /// The host calls this call made, for a deadline hit in a loop of them.
    pub(crate) host_calls: HostCallTally,
    log: CallLog,
}

impl CallState {
    /// The state of a new instance of `plugin`, under `limits`.
    pub(crate) fn new(plugin: Arc<str>, limits: PluginLimits, inputs: Arc<dyn InputView>) -> Self {
        CallState {
            plugin,
            node: String::new(),
            subject: None,
            node_reads: NodeReads::default(),
            memory: MemoryCap::new(limits.memory_bytes),
            limits,
            inputs,
            reads: Reads::default(),
            read_bytes: 0,
            document_bytes: 0,
            refused: None,
            host_calls: HostCallTally::default(),
            log: CallLog::default(),
        }
    }

    /// Resets the per-call parts before a call on a (possibly reused) instance. The memory
    /// total stays: it is the instance's.
    pub(crate) fn begin(&mut self, node: &Arc<NodeView>, inputs: Arc<dyn InputView>) {
        node.id().clone_into(&mut self.node);
        self.subject = Some(Arc::clone(node));
        self.node_reads = NodeReads::default();
        self.inputs = inputs;
        self.reads = Reads::default();
        self.read_bytes = 0;
        self.document_bytes = 0;
        self.refused = None;
        self.memory.exceeded = None;
        self.host_calls = HostCallTally::default();
        self.log = CallLog::default();
    }

    /// Ends the call's log (at the end of a call or `init`): what stdout and stderr wrote
    /// without a final newline, the panic line held past the cap, and one line that says how
    /// many lines the cap dropped.
    pub(crate) fn finish(&mut self) {
        let (plugin, node) = (&*self.plugin, self.node.as_str());
        let dropped = self
            .log
            .finish(|level, line| emit(plugin, node, level, line));
        if dropped > 0 {
            tracing::warn!(
                plugin,
                node,
                dropped,
                "dropped {dropped} log lines of this call past its cap of {MAX_LOG_LINES} lines and {MAX_LOG_BYTES} bytes"
            );
        }
    }

    /// The panic hook's message, if the plugin panicked in this call.
    pub(crate) fn panic_message(&self) -> Option<String> {
        self.log.panic_line().map(str::to_owned)
    }

    /// Text the plugin wrote to stdout (info lines) or stderr (warnings).
    pub(crate) fn stdio_write(&mut self, stderr: bool, bytes: &[u8]) {
        let (plugin, node) = (&*self.plugin, self.node.as_str());
        self.log
            .stdio_write(stderr, bytes, |level, line| emit(plugin, node, level, line));
    }

    /// One line from the `log` import.
    fn log(&mut self, level: Level, message: &str) {
        if let Some(line) = self.log.admit(level, message) {
            emit(&self.plugin, &self.node, level, line);
        }
    }

    /// `get`: records the read (within budget) and hands over the document (within budget).
    fn get(&mut self, kind: String, name: String) -> Result<Option<WitDocument>, PluginFault> {
        let doc = self.inputs.get(&kind, &name);
        let key = DocKey { kind, name };
        if !self.reads.documents.contains(&key) {
            self.charge_read("get", key.kind.len() + key.name.len())?;
            self.reads.documents.insert(key);
        }
        Ok(self.hand_over("get", doc.into_iter().collect())?.pop())
    }

    /// `list`: records the read (within budget) and hands over the documents (within budget).
    fn list(&mut self, kind: String) -> Result<Vec<WitDocument>, PluginFault> {
        let docs = self.inputs.list(&kind);
        if !self.reads.kinds.contains(&kind) {
            self.charge_read("list", kind.len())?;
            self.reads.kinds.insert(kind);
        }
        self.hand_over("list", docs)
    }

    /// Counts one more recorded read of `bytes` bytes against the call's read budgets.
    fn charge_read(&mut self, call: &'static str, bytes: usize) -> Result<(), PluginFault> {
        let reads =
            self.reads.documents.len() + self.reads.kinds.len() + self.node_reads.fields.len() + 1;
        over(call, "max_reads", reads, self.limits.max_reads)?;
        let read_bytes = self.read_bytes.saturating_add(bytes);
        over(
            call,
            "max_read_bytes",
            read_bytes,
            self.limits.max_read_bytes,
        )?;
        self.read_bytes = read_bytes;
        Ok(())
    }

    /// Copies `docs` for the guest once their bytes fit in the call's document budget.
    fn hand_over(
        &mut self,
        call: &'static str,
        docs: Vec<Document>,
    ) -> Result<Vec<WitDocument>, PluginFault> {
        let bytes = docs
            .iter()
            .map(|d| d.kind.len() + d.name.len() + d.json.len())
            .fold(self.document_bytes, usize::saturating_add);
        over(
            call,
            "max_document_bytes",
            bytes,
            self.limits.max_document_bytes,
        )?;
        self.document_bytes = bytes;
        Ok(docs
            .into_iter()
            .map(|d| WitDocument {
                kind: d.kind,
                name: d.name,
                json: d.json.to_string(),
            })
            .collect())
    }
}

/// `Err` naming `limit` when `asked` is past `max`.
fn over(
    call: &'static str,
    limit: &'static str,
    asked: usize,
    max: usize,
) -> Result<(), PluginFault> {
    if asked > max {
        return Err(PluginFault::HostCallLimit {
            call,
            limit,
            asked,
            max,
        });
    }
    Ok(())
}

/// Writes one of the plugin's lines to the host log, tagged with the plugin and the node.
fn emit(plugin: &str, node: &str, level: Level, line: &str) {
    match level {
        Level::Trace => tracing::trace!(plugin, node, "{line}"),
        Level::Debug => tracing::debug!(plugin, node, "{line}"),
        Level::Info => tracing::info!(plugin, node, "{line}"),
        Level::Warn => tracing::warn!(plugin, node, "{line}"),
        Level::Error => tracing::error!(plugin, node, "{line}"),
    }
}

impl types::Host for CallState {}

/// Adds the contract's imports to a linker. They are defined by hand rather than through
/// the bindings: a budget refusal must end the call (a trap), and keys and log lines are read
/// in place (`WasmStr`), so that the host copies nothing it is about to refuse.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    types::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    let mut host = linker.instance(HOST_V2)?;
    host.func_wrap("log", log_import::<Level>)?;
    host.func_wrap("get", get_import::<WitDocument>)?;
    host.func_wrap("list", list_import::<WitDocument>)?;
    node::add_to_linker(linker)?;
    // Contract 0.1.0: the same calls, in its types.
    v1::nebucloud::xds::types::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    let mut host = linker.instance(HOST_V1)?;
    host.func_wrap("log", log_import::<v1::nebucloud::xds::types::Level>)?;
    host.func_wrap("get", get_import::<v1::nebucloud::xds::types::Document>)?;
    host.func_wrap("list", list_import::<v1::nebucloud::xds::types::Document>)
}

impl v1::nebucloud::xds::types::Host for CallState {}

impl From<v1::nebucloud::xds::types::Level> for Level {
    fn from(level: v1::nebucloud::xds::types::Level) -> Self {
        use v1::nebucloud::xds::types::Level as V1;
        match level {
            V1::Trace => Level::Trace,
            V1::Debug => Level::Debug,
            V1::Info => Level::Info,
            V1::Warn => Level::Warn,
            V1::Error => Level::Error,
        }
    }
}

impl From<WitDocument> for v1::nebucloud::xds::types::Document {
    fn from(d: WitDocument) -> Self {
        v1::nebucloud::xds::types::Document {
            kind: d.kind,
            name: d.name,
            json: d.json,
        }
    }
}

/// A document as one contract version's bindings type it.
trait DocumentOf: From<WitDocument> + wasmtime::component::Lower + Send + Sync + 'static {}
impl<D: From<WitDocument> + wasmtime::component::Lower + Send + Sync + 'static> DocumentOf for D {}

/// A log level as one contract version's bindings type it.
trait LevelOf: Into<Level> + wasmtime::component::Lift + Send + Sync + 'static {}
impl<L: Into<Level> + wasmtime::component::Lift + Send + Sync + 'static> LevelOf for L {}

/// `log(level, message)`: copies at most one log line's worth of the message.
fn log_import<L: LevelOf>(
    mut store: StoreContextMut<'_, CallState>,
    (level, message): (L, WasmStr),
) -> wasmtime::Result<()> {
    let line = cut(&message.to_str(&store)?, MAX_LOG_LINE).to_owned();
    store.data_mut().log(level.into(), &line);
    store.data_mut().host_calls.returned(HostCall::Log);
    Ok(())
}

/// `get(kind, name) -> option<document>`.
fn get_import<D: DocumentOf>(
    mut store: StoreContextMut<'_, CallState>,
    (kind, name): (WasmStr, WasmStr),
) -> wasmtime::Result<(Option<D>,)> {
    let kind = key(&mut store, "get", &kind, KIND)?;
    let name = key(&mut store, "get", &name, NAME)?;
    let doc = store.data_mut().get(kind, name);
    store.data_mut().host_calls.returned(HostCall::Get);
    Ok((refuse(&mut store, doc)?.map(D::from),))
}

/// `list(kind) -> list<document>`.
fn list_import<D: DocumentOf>(
    mut store: StoreContextMut<'_, CallState>,
    (kind,): (WasmStr,),
) -> wasmtime::Result<(Vec<D>,)> {
    let kind = key(&mut store, "list", &kind, KIND)?;
    let docs = store.data_mut().list(kind);
    store.data_mut().host_calls.returned(HostCall::List);
    Ok((refuse(&mut store, docs)?.into_iter().map(D::from).collect(),))
}

/// The longest kind, named as the fault names it.
const KIND: (&str, usize) = ("the kind length limit", MAX_KIND_BYTES);
/// The longest name, named as the fault names it.
const NAME: (&str, usize) = ("the name length limit", MAX_NAME_BYTES);

/// Copies a key out of the guest, after checking its length in place.
fn key(
    store: &mut StoreContextMut<'_, CallState>,
    call: &'static str,
    key: &WasmStr,
    (limit, max): (&'static str, usize),
) -> wasmtime::Result<String> {
    let len = {
        let key = key.to_str(&*store)?;
        if key.len() <= max {
            return Ok(key.into_owned());
        }
        key.len()
    };
    refuse(store, over(call, limit, len, max).map(|()| String::new()))
}

/// Turns a budget refusal into the trap that ends the call, and keeps it as the call's fault.
fn refuse<T>(
    store: &mut StoreContextMut<'_, CallState>,
    result: Result<T, PluginFault>,
) -> wasmtime::Result<T> {
    result.map_err(|fault| {
        let trap = wasmtime::Error::msg(fault.to_string());
        store.data_mut().refused = Some(fault);
        trap
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::StaticInputs;

    fn state(limits: PluginLimits, inputs: StaticInputs) -> CallState {
        CallState::new("p".into(), limits, Arc::new(inputs))
    }

    #[test]
    fn reads_are_recorded_up_to_their_count_and_bytes() {
        let limits = PluginLimits {
            max_reads: 3,
            max_read_bytes: 20,
            ..PluginLimits::default()
        };
        let mut s = state(limits, StaticInputs::new());
        for name in ["a", "b", "a"] {
            assert!(s.get("Kind".into(), name.into()).unwrap().is_none());
        }
        assert!(s.list("Kind".into()).unwrap().is_empty());
        let fault = s.get("Kind".into(), "c".into()).unwrap_err();
        assert_eq!(
            fault,
            PluginFault::HostCallLimit {
                call: "get",
                limit: "max_reads",
                asked: 4,
                max: 3
            }
        );
        assert_eq!(s.reads.documents.len() + s.reads.kinds.len(), 3);
        let mut s = state(limits, StaticInputs::new());
        assert!(s.get("Kind".into(), "0123456789ab".into()).is_ok());
        let fault = s.list("Kinds".into()).unwrap_err();
        assert_eq!(
            fault.to_string(),
            "host call `list` exceeded max_read_bytes of 20 (asked for 21)"
        );
        assert_eq!(s.read_bytes, 16);
    }

    #[test]
    fn documents_handed_over_count_every_time() {
        let mut inputs = StaticInputs::new();
        inputs.insert("Kind", "doc", "x".repeat(100));
        let limits = PluginLimits {
            max_document_bytes: 250,
            ..PluginLimits::default()
        };
        let mut s = state(limits, inputs);
        assert!(s.get("Kind".into(), "doc".into()).unwrap().is_some());
        assert_eq!(s.list("Kind".into()).unwrap().len(), 1);
        let fault = s.get("Kind".into(), "doc".into()).unwrap_err();
        assert_eq!(
            fault,
            PluginFault::HostCallLimit {
                call: "get",
                limit: "max_document_bytes",
                asked: 321,
                max: 250
            }
        );
    }
}
