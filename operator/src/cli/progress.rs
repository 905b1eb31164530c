//! Progress while executing: a bar on a terminal, one plain line per finished step otherwise
//! (logs and CI read those).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::docker::Progress;
use crate::engine::{SetKey, Step};

pub struct TerminalProgress {
    bar: Option<ProgressBar>,
}

impl TerminalProgress {
    pub fn new(total: u64) -> Self {
        let bar = (std::io::stderr().is_terminal() && total > 0).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} steps  {wide_msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        TerminalProgress { bar }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::EnsureNetwork { name } => format!("network {name}"),
        Step::EnsureVolume { name } => format!("volume {name}"),
        Step::EnsureImage { image, .. } => format!("image {image}"),
        Step::Create { name, .. } => format!("created {name}"),
        Step::Start { name } => format!("started {name}"),
        Step::WaitReady { name } => format!("ready {name}"),
        Step::WaitExit { name } => format!("completed {name}"),
        Step::Stop { name, .. } => format!("stopped {name}"),
        Step::Rename { from, to, .. } => format!("renamed {from} aside to {to}"),
        Step::Remove { name, .. } => format!("removed {name}"),
    }
}

impl Progress for TerminalProgress {
    fn step_started(&self, host: &str, _set: &SetKey, step: &Step) {
        match (&self.bar, step) {
            (Some(b), Step::WaitReady { name }) => b.set_message(format!("{host}: waiting for {name} to be ready")),
            (Some(b), Step::WaitExit { name }) => b.set_message(format!("{host}: waiting for task {name} to complete")),
            _ => {}
        }
    }

    fn step_finished(&self, host: &str, _set: &SetKey, step: &Step, elapsed: Duration) {
        match &self.bar {
            Some(b) => {
                b.inc(1);
                b.set_message(format!("{host}: {}", describe(step)));
            }
            None => eprintln!("{host}: {} ({} ms)", describe(step), elapsed.as_millis()),
        }
    }

    fn pull_progress(&self, host: &str, image: &str, layer: &str, status: &str, current: i64, total: i64) {
        match &self.bar {
            Some(b) if total > 0 => {
                b.set_message(format!("{host}: pulling {image}: {layer} {status} {current}/{total}"))
            }
            Some(b) => b.set_message(format!("{host}: pulling {image}: {status}")),
            // Plain output: only the lines that say something happened, not every chunk.
            None if status.starts_with("Pulling from")
                || status.starts_with("Status:")
                || status.starts_with("Digest:") =>
            {
                eprintln!("{host}: pull {image}: {status}")
            }
            None => {}
        }
    }
}

/// A build's output, one plain line per line of the builder's, on stderr (`Step 2/4 : COPY ...`).
pub struct BuildLines;

impl crate::docker::build::BuildProgress for BuildLines {
    fn line(&self, host: &str, line: &str) {
        let line = line.trim_end();
        if !line.is_empty() {
            eprintln!("{host}: build: {line}");
        }
    }
}
