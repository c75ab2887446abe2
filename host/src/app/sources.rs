//! The remote input sources a config names (etcd, Kubernetes), each behind its Cargo feature:
//! started beside the pipeline, marking the server not ready until their first full sync.

use std::sync::Arc;

use super::{AppError, Task};
use crate::admin::Readiness;
use crate::config::Config;
#[cfg(any(feature = "etcd", feature = "kubernetes"))]
use crate::inputs::SourceHealth;
use crate::inputs::{InputLimits, InputStore};
use crate::pipeline::Pipeline;

/// Connects the sources `config` names to `store`, and their change feeds to `pipeline`; returns
/// their tasks. A source this build has no feature for never gets here: the config
/// check refuses it.
#[cfg_attr(
    not(any(feature = "etcd", feature = "kubernetes")),
    allow(unused_variables, clippy::unused_async)
)]
pub(super) async fn start(
    config: &Config,
    store: &Arc<InputStore>,
    limits: InputLimits,
    pipeline: &Pipeline,
    readiness: &Arc<Readiness>,
) -> Result<Vec<Task>, AppError> {
    #[cfg_attr(not(any(feature = "etcd", feature = "kubernetes")), allow(unused_mut))]
    let mut tasks: Vec<Task> = Vec::new();
    #[cfg(feature = "etcd")]
    if let Some(etcd) = &config.inputs.etcd {
        let source = crate::inputs::EtcdSource::new(
            etcd.endpoints.clone(),
            etcd.prefix.clone(),
            Arc::clone(store),
        )
        .with_limits(limits);
        tasks.push(ready_after_first_sync(readiness, "etcd", source.health()));
        let p = pipeline.clone();
        tasks.push(Box::pin(source.run(move |keys| p.inputs_changed(keys))));
    }
    #[cfg(feature = "kubernetes")]
    if let Some(k8s) = &config.inputs.kubernetes {
        let source = crate::inputs::KubernetesSource::connect(k8s, Arc::clone(store)).await?;
        tasks.push(ready_after_first_sync(
            readiness,
            "kubernetes",
            source.health(),
        ));
        let p = pipeline.clone();
        tasks.push(Box::pin(source.run(move |keys| p.inputs_changed(keys))));
    }
    Ok(tasks)
}

/// Marks `check` not ready until its source's first full sync.
#[cfg(any(feature = "etcd", feature = "kubernetes"))]
fn ready_after_first_sync(
    readiness: &Arc<Readiness>,
    check: &'static str,
    health: SourceHealth,
) -> Task {
    readiness.set(check, false);
    let r = Arc::clone(readiness);
    Box::pin(async move {
        if health.subscribe().wait_for(|s| s.syncs > 0).await.is_ok() {
            r.set(check, true);
        }
    })
}
