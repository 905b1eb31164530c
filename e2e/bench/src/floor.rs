//! The engine's floor: what the same work costs through direct API calls, with no tool in
//! between. Same containers as the tools run (image, env, exposed port, restart policy, stop
//! timeout; see [`crate::workload`]), through the same counting proxy, with a client that
//! connected and negotiated before the clock starts.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context as _;
use berth_tests::{CountingProxy, ECHO_IMAGE};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
};
use futures::{StreamExt, TryStreamExt};

use crate::sample::Sample;
use crate::workload::STOP_GRACE_SECONDS;

/// How many operations run at once in the parallel floor.
pub const PARALLEL: usize = 4;

/// The floor's containers: `n` of them in their own namespace label.
pub struct Floor<'a> {
    pub docker: &'a Docker,
    pub proxy: &'a CountingProxy,
    pub namespace: String,
    pub n: usize,
}

impl Floor<'_> {
    fn name(&self, i: usize) -> String {
        format!("{}.floor.{i:03}", self.namespace)
    }

    fn body(&self, v: &str) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(ECHO_IMAGE.to_string()),
            env: Some(vec![format!("V={v}")]),
            exposed_ports: Some(vec!["8080/tcp".to_string()]),
            labels: Some(HashMap::from([("berth.dev/namespace".to_string(), self.namespace.clone())])),
            stop_timeout: Some(STOP_GRACE_SECONDS as i64),
            host_config: Some(HostConfig {
                mounts: Some(Vec::new()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn create_start(&self, i: usize, v: &str) -> anyhow::Result<()> {
        let name = self.name(i);
        let opts = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        self.docker.create_container(Some(opts), self.body(v)).await.with_context(|| format!("create {name}"))?;
        self.docker
            .start_container(&name, None::<StartContainerOptions>)
            .await
            .with_context(|| format!("start {name}"))?;
        Ok(())
    }

    async fn stop_remove(&self, i: usize) -> anyhow::Result<()> {
        let name = self.name(i);
        let stop = StopContainerOptions { t: Some(STOP_GRACE_SECONDS as i32), ..Default::default() };
        self.docker.stop_container(&name, Some(stop)).await.with_context(|| format!("stop {name}"))?;
        self.docker
            .remove_container(&name, Some(RemoveContainerOptions { v: true, ..Default::default() }))
            .await
            .with_context(|| format!("remove {name}"))?;
        Ok(())
    }

    async fn timed<F: Future<Output = anyhow::Result<()>>>(&self, work: F) -> anyhow::Result<Sample> {
        crate::cleanup::check_interrupted()?;
        self.proxy.reset();
        let started = Instant::now();
        work.await?;
        Ok(Sample { started, wall: started.elapsed(), requests: self.proxy.requests() })
    }

    /// Create and start every container, one after the other.
    pub async fn converge_sequential(&self) -> anyhow::Result<Sample> {
        self.timed(async {
            for i in 0..self.n {
                self.create_start(i, "1").await?;
            }
            Ok(())
        })
        .await
    }

    /// Create and start every container, [`PARALLEL`] at a time.
    pub async fn converge_parallel(&self) -> anyhow::Result<Sample> {
        self.timed(async {
            futures::stream::iter(0..self.n)
                .map(|i| self.create_start(i, "1"))
                .buffer_unordered(PARALLEL)
                .try_collect::<Vec<()>>()
                .await
                .map(drop)
        })
        .await
    }

    /// One label-filtered list of the containers: what knowing that nothing changed costs.
    pub async fn noop(&self) -> anyhow::Result<Sample> {
        self.timed(async {
            let filters =
                HashMap::from([("label".to_string(), vec![format!("berth.dev/namespace={}", self.namespace)])]);
            let opts = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
            let found = self.docker.list_containers(Some(opts)).await.context("list the floor's containers")?;
            anyhow::ensure!(found.len() == self.n, "the floor lists {} containers, expected {}", found.len(), self.n);
            Ok(())
        })
        .await
    }

    /// Replace container `i` by one with another env value: stop, remove, create, start.
    pub async fn change_one(&self, i: usize, v: &str) -> anyhow::Result<Sample> {
        self.timed(async {
            self.stop_remove(i).await?;
            self.create_start(i, v).await
        })
        .await
    }

    /// Stop and remove every container, one after the other.
    pub async fn delete_sequential(&self) -> anyhow::Result<Sample> {
        self.timed(async {
            for i in 0..self.n {
                self.stop_remove(i).await?;
            }
            Ok(())
        })
        .await
    }

    /// Stop and remove every container, [`PARALLEL`] at a time.
    pub async fn delete_parallel(&self) -> anyhow::Result<Sample> {
        self.timed(async {
            futures::stream::iter(0..self.n)
                .map(|i| self.stop_remove(i))
                .buffer_unordered(PARALLEL)
                .try_collect::<Vec<()>>()
                .await
                .map(drop)
        })
        .await
    }
}
