//! The plugin chain: an ordered list of plugins, each fed the previous one's resources;
//! every output is checked before the next stage sees it, and any failure rejects the run.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

mod checked;

use checked::Checked;

use super::node::{NodeReads, NodeView};
use super::plugin::{CallReport, Plugin, PluginFault};
use crate::cache::{is_valid_type_url, Resource, ResourceSet};
use crate::inputs::{InputView, Reads};
use crate::schema::{Schema, SchemaError};

/// A plugin run that produced no resources: which plugin, which node, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin {plugin} on node {node}: {fault}")]
pub struct PluginRunError {
    /// The plugin.
    pub plugin: String,
    /// The node id.
    pub node: String,
    /// What went wrong.
    #[source]
    pub fault: PluginFault,
}

/// What a successful chain run produced.
#[derive(Debug)]
pub struct ChainOutput {
    /// The node's resources, checked.
    pub resources: ResourceSet,
    /// Every input any plugin read: the group's dependencies.
    pub reads: Reads,
    /// Every node field any plugin read: nodes that agree on these get the same result.
    pub node_reads: NodeReads,
    /// Per plugin, in order, what its call cost.
    pub reports: Vec<(String, CallReport)>,
}

/// An ordered list of plugins: generators first, then transforms and validators.
#[derive(Debug, Clone, Default)]
pub struct PluginChain {
    plugins: Vec<Arc<Plugin>>,
    /// Bodies this chain's outputs decoded already, shared by its clones.
    checked: Arc<Checked>,
}

impl PluginChain {
    /// A chain of these plugins, in order.
    pub fn new(plugins: Vec<Arc<Plugin>>) -> Self {
        PluginChain {
            plugins,
            checked: Arc::new(Checked::default()),
        }
    }

    /// The plugins, in order.
    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// Runs every plugin in turn for `node`. Blocking (plugins are CPU work): call it off the
    /// async runtime. All or nothing: a failing stage fails the run, never a partial result.
    pub fn run(
        &self,
        node: impl Into<NodeView>,
        inputs: Arc<dyn InputView>,
    ) -> Result<ChainOutput, PluginRunError> {
        let node = Arc::new(node.into());
        self.run_reading(
            &node,
            inputs,
            &mut Reads::default(),
            &mut NodeReads::default(),
        )
    }

    /// As [`PluginChain::run`]; whatever the outcome, `reads` and `node_reads` receive every
    /// input and node field the run read, up to and including the stage that failed: a
    /// failed group depends on exactly those, so only their change runs it again.
    pub fn run_reading(
        &self,
        node: &Arc<NodeView>,
        inputs: Arc<dyn InputView>,
        reads: &mut Reads,
        node_reads: &mut NodeReads,
    ) -> Result<ChainOutput, PluginRunError> {
        let mut resources: Vec<Resource> = Vec::new();
        let mut reports = Vec::with_capacity(self.plugins.len());
        for plugin in &self.plugins {
            let started = Instant::now();
            let fail = |fault: PluginFault| {
                let kind = fault_kind(&fault);
                metrics::counter!("plugin_errors_total", "plugin" => plugin.name().to_owned(), "kind" => kind).increment(1);
                let error = PluginRunError {
                    plugin: plugin.name().to_owned(),
                    node: node.id().to_owned(),
                    fault,
                };
                tracing::warn!(plugin = plugin.name(), node = %node.id(), error = %error.fault, "plugin run failed");
                error
            };
            let (out, report) = plugin
                .call_reading(node, &resources, Arc::clone(&inputs), reads, node_reads)
                .map_err(fail)?;
            // A read that silently found nothing because the store failed must not become a
            // config that silently lacks it.
            if let Some(fault) = inputs.fault() {
                return Err(fail(PluginFault::InputsUnavailable(fault)));
            }
            check_output(&resources, &out, &self.checked)
                .map_err(|m| fail(PluginFault::InvalidOutput(m)))?;
            metrics::counter!("plugin_runs_total", "plugin" => plugin.name().to_owned())
                .increment(1);
            metrics::histogram!("plugin_call_seconds", "plugin" => plugin.name().to_owned())
                .record(started.elapsed().as_secs_f64());
            if let Some(i) = report.instructions {
                metrics::counter!("plugin_instructions_total", "plugin" => plugin.name().to_owned()).increment(i);
            }
            reports.push((plugin.name().to_owned(), report));
            resources = out;
        }
        let resources = ResourceSet::new(resources).map_err(|e| PluginRunError {
            plugin: self
                .plugins
                .last()
                .map_or_else(String::new, |p| p.name().to_owned()),
            node: node.id().to_owned(),
            fault: PluginFault::InvalidOutput(e.to_string()),
        })?;
        Ok(ChainOutput {
            resources,
            reads: reads.clone(),
            node_reads: node_reads.clone(),
            reports,
        })
    }
}

/// Checks what a stage returned: well-formed, known type URLs, unique names, and bodies that
/// decode as their type. Resources passed through unchanged from the stage's input were
/// checked already and are skipped, as are bodies `checked` saw decode before.
fn check_output(input: &[Resource], output: &[Resource], checked: &Checked) -> Result<(), String> {
    let schema = Schema::envoy().map_err(|e| e.to_string())?;
    let before: BTreeMap<(&str, &str), &str> = input
        .iter()
        .map(|r| ((r.type_url(), r.name()), r.version()))
        .collect();
    let mut seen = HashSet::with_capacity(output.len());
    for r in output {
        if !seen.insert((r.type_url(), r.name())) {
            return Err(format!("duplicate {} named {:?}", r.type_url(), r.name()));
        }
        if r.name().is_empty() {
            return Err(format!("a {} has an empty name", r.type_url()));
        }
        if !is_valid_type_url(r.type_url()) {
            return Err(format!(
                "{:?} has the malformed type URL {:?}",
                r.name(),
                r.type_url()
            ));
        }
        if before.get(&(r.type_url(), r.name())) == Some(&r.version()) || checked.contains(r) {
            continue;
        }
        match schema.decode(r.type_url(), r.body()) {
            Ok(_) => checked.insert(r),
            Err(SchemaError::UnknownType { type_url }) => {
                return Err(format!(
                    "{:?} has type URL {type_url:?}, which names no Envoy API message",
                    r.name()
                ))
            }
            Err(e) => return Err(format!("{:?}: {e}", r.name())),
        }
    }
    Ok(())
}

fn fault_kind(fault: &PluginFault) -> &'static str {
    match fault {
        PluginFault::Returned(_) => "returned",
        PluginFault::Trap(_) => "trap",
        PluginFault::Timeout(_) => "timeout",
        PluginFault::MemoryLimit { .. } => "memory",
        PluginFault::InputTooLarge { .. } => "input_size",
        PluginFault::OutputTooLarge { .. } | PluginFault::OutputTooLargeToCopy { .. } => {
            "output_size"
        }
        PluginFault::HostCallLimit { .. } => "host_call_limit",
        PluginFault::InvalidOutput(_) => "invalid_output",
        PluginFault::Instantiate(_) => "instantiate",
        PluginFault::InputsUnavailable(_) => "inputs_unavailable",
    }
}
