//! A DA method submitted as a `filter` component: the [`Analysis`] of the
//! shared forecast–analysis cycle, moved across the sandbox boundary.
//!
//! The host keeps everything else of the cycle: it draws the initial
//! ensemble, advances it with the experiment's model, observes it, records
//! statistics and keeps ensembles exactly as for a native method. The
//! component sees the forecast ensemble, its observed image and y, never
//! the truth. No inflation or rotation is applied by the host: that is the
//! submission's business.

use crate::ensemble::{self, Analysis, Execution, PostProcess, Trajectory};
use crate::method::{DaMethod, Role};
use crate::pool::unpoisoned;
use crate::twin::Twin;
use anyhow::Result;
use geohost_sandbox::model::{ForwardModel, ObsOperator};
use geohost_sandbox::{Accounting, WasmFilter};
use nalgebra::{DMatrix, DVector};
use rand::RngCore;
use std::sync::{Arc, Mutex};

/// A submitted filter, ready to run like any [`crate::Method`] (wrap it
/// with [`crate::Method::from_method`]).
#[derive(serde::Serialize)]
pub struct Submission {
    /// The component's registry id (`blake3:…`).
    pub component: String,
    /// Name and version as the component describes itself.
    pub name: String,
    pub version: String,
    #[serde(rename = "N")]
    pub members: usize,
    /// The config it was given, as JSON.
    pub config: serde_json::Value,
    #[serde(skip)]
    filter: Arc<Mutex<WasmFilter>>,
}

/// The context of every error of a submission's run (its analysis, or the
/// forecast or observation of the ensemble it returned), with the cycle:
/// `anyhow::Error::downcast_ref::<FailedAt>()` finds it under any context.
#[derive(Debug, thiserror::Error)]
#[error("the submission failed at cycle {cycle} (t = {time})")]
pub struct FailedAt {
    pub cycle: usize,
    pub time: f64,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Submission({} {}@{} N={})", self.component, self.name, self.version, self.members)
    }
}

impl Submission {
    pub fn new(component: String, config: serde_json::Value, filter: WasmFilter) -> Submission {
        let (name, version, members) = (filter.info.name.clone(), filter.info.version.clone(), filter.info.members);
        Submission { component, name, version, members, config, filter: Arc::new(Mutex::new(filter)) }
    }

    /// A handle that reads the component's accounting after the
    /// submission has been moved into a [`crate::Method`].
    pub fn meter(&self) -> Meter {
        Meter(self.filter.clone())
    }
}

/// Reads a submission's fuel, peak memory and calls so far.
pub struct Meter(Arc<Mutex<WasmFilter>>);

impl Meter {
    pub fn accounting(&self) -> Accounting {
        unpoisoned(self.0.lock()).accounting()
    }
}

impl DaMethod for Submission {
    fn tag(&self) -> &'static str {
        "Submission"
    }
    fn label(&self) -> String {
        format!("{}@{} N={} (submission {})", self.name, self.version, self.members, &self.component[7..19.min(self.component.len())])
    }
    fn role(&self) -> Role {
        Role::Candidate
    }
    fn run(
        &self,
        twin: &Twin,
        model: &mut dyn ForwardModel,
        obs: &mut dyn ObsOperator,
        rng: &mut rand_chacha::ChaCha8Rng,
        execution: Execution<'_>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Trajectory> {
        let mut filter = unpoisoned(self.filter.lock());
        let mut analysis = ComponentAnalysis { filter: &mut filter, times: &twin.times, cycle: 0 };
        let no_post = PostProcess { infl: 1.0, rot: false };
        let mut done = 0;
        let result = ensemble::cycle(twin, model, obs, self.members, &mut analysis, no_post, execution, rng, &mut |k| {
            done = k + 1;
            progress(k)
        });
        result.map_err(|e| {
            let cycle = done.min(twin.times.len().saturating_sub(1));
            e.context(FailedAt { cycle, time: twin.times.get(cycle).copied().unwrap_or(f64::NAN) })
        })
    }
}

/// The [`Analysis`] that calls the component; cycles come in order, so it
/// counts them to give the component the analysis time.
struct ComponentAnalysis<'a> {
    filter: &'a mut WasmFilter,
    times: &'a [f64],
    cycle: usize,
}

impl Analysis for ComponentAnalysis<'_> {
    fn analyse(&mut self, e: &mut DMatrix<f64>, eo: &DMatrix<f64>, y: &DVector<f64>, _r: &DVector<f64>, rng: &mut dyn RngCore) -> Result<()> {
        let time = self.times[self.cycle];
        self.cycle += 1;
        let seed = rng.next_u64();
        *e = self.filter.analyse(e, eo, y, time, seed)?;
        Ok(())
    }
}
