//! The planner's laws for tasks (`spec.mode: Task`), checked against [`SimHost`].
//!
//! A world is one task set on a host where each ordinal was left in some state by earlier
//! runs: nothing; a container of the current revision that completed, failed, still runs, or
//! was created and never started; a container of an earlier revision that completed or still
//! runs; and the history may record the current revision completed on the host. The laws:
//!
//! 1. **Once per revision**: converging runs the current revision's container of an ordinal
//!    exactly once when nothing of it completed, and never when a container of it completed or
//!    the history records it completed; a running or created one is finished, not run again.
//! 2. **Convergence**: one plan, applied, leaves a host whose next plan is empty (unless an
//!    earlier revision still runs: then the plan waits for it and touches nothing of that
//!    ordinal); every ordinal then shows exactly one completed container of the current
//!    revision, or none when the history stands for it, and nothing of earlier revisions.
//! 3. **A running task is never stopped**: no plan stops a container that runs, of any revision.
//! 4. **Output is kept**: a completed container of the current revision is never removed.

use proptest::prelude::*;

use super::model::{ContainerSpec, DesiredSet, Order, Pull, SetKey, State};
use super::plan::{Scope, Step, plan_host};
use super::sim::SimHost;

const HOST: &str = "sim-1";

/// What earlier runs left on one ordinal.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Left {
    Nothing,
    Completed,
    Failed,
    Running,
    Created,
    OldCompleted,
    OldRunning,
}

fn left() -> impl Strategy<Value = Left> {
    prop_oneof![
        Just(Left::Nothing),
        Just(Left::Completed),
        Just(Left::Failed),
        Just(Left::Running),
        Just(Left::Created),
        Just(Left::OldCompleted),
        Just(Left::OldRunning),
    ]
}

fn task(version: &str, replicas: u32) -> DesiredSet {
    let spec = ContainerSpec {
        image: "example/migrate:1".into(),
        cmd: Some(vec!["migrate".into(), version.into()]),
        restart_policy: "no".into(),
        task: true,
        ..ContainerSpec::default()
    };
    DesiredSet::new(SetKey::new("shop", "migrate"), spec, replicas, Order::StartFirst, Pull::Never)
}

/// The host after earlier runs, and the desired set (with the history's word on completion).
fn world(lefts: &[Left], recorded: bool) -> (SimHost, DesiredSet) {
    let d = DesiredSet { task_completed: recorded, ..task("v2", lefts.len() as u32) };
    let old = task("v1", lefts.len() as u32);
    let mut host = SimHost::default();
    for (o, l) in lefts.iter().enumerate() {
        let o = o as u32;
        let (set, state, exit) = match l {
            Left::Nothing => continue,
            Left::Completed => (&d, State::Exited, Some(0)),
            Left::Failed => (&d, State::Exited, Some(3)),
            Left::Running => (&d, State::Running, None),
            Left::Created => (&d, State::Created, None),
            Left::OldCompleted => (&old, State::Exited, Some(0)),
            Left::OldRunning => (&old, State::Running, None),
        };
        host.add_container(&set.container_name(o), set.container_labels(o), state, None);
        host.containers.last_mut().expect("just added").exit_code = exit;
    }
    (host, d)
}

fn plan(host: &SimHost, d: &DesiredSet) -> super::plan::HostPlan {
    plan_host(HOST, std::slice::from_ref(d), &host.observe(), &Scope::of_sets([&d.key]))
}

fn steps(p: &super::plan::HostPlan) -> Vec<&Step> {
    p.sets.iter().flat_map(|s| s.prepare.iter().chain(s.changes.iter().flat_map(|c| &c.steps))).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn law1_once_per_revision(lefts in prop::collection::vec(left(), 0..4), recorded in any::<bool>()) {
        let (mut host, d) = world(&lefts, recorded);
        let mut creates = vec![0usize; lefts.len()];
        for _ in 0..3 {
            let p = plan(&host, &d);
            for s in steps(&p) {
                if let Step::Create { ordinal, .. } = s {
                    creates[*ordinal as usize] += 1;
                }
            }
            host.apply_plan(&p, std::slice::from_ref(&d)).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            // Earlier revisions that ran meanwhile have finished.
            for c in host.containers.iter_mut().filter(|c| c.state == State::Running) {
                (c.state, c.exit_code) = (State::Exited, Some(0));
            }
        }
        for (o, l) in lefts.iter().enumerate() {
            let expected = match l {
                Left::Completed | Left::Running | Left::Created => 0,
                Left::Nothing | Left::OldCompleted | Left::OldRunning if recorded => 0,
                _ => 1,
            };
            prop_assert_eq!(creates[o], expected, "ordinal {} left {:?}, recorded {}", o, l, recorded);
        }
    }

    #[test]
    fn law2_one_apply_converges(lefts in prop::collection::vec(left(), 0..4), recorded in any::<bool>()) {
        let (mut host, d) = world(&lefts, recorded);
        let p = plan(&host, &d);
        host.apply_plan(&p, std::slice::from_ref(&d)).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let again = plan(&host, &d);
        let waiting: Vec<u32> = lefts.iter().enumerate().filter(|(_, l)| **l == Left::OldRunning).map(|(o, _)| o as u32).collect();
        // Only the ordinals where an earlier revision still runs may have work left, and the
        // plan touches nothing of them while it runs.
        prop_assert!(steps(&again).is_empty(), "{:?}", again);
        let observed = host.observe();
        for (o, l) in lefts.iter().enumerate() {
            let o = o as u32;
            let here: Vec<_> = observed.iter().filter(|c| c.ordinal == Some(o)).collect();
            if waiting.contains(&o) {
                prop_assert!(here.iter().any(|c| c.state == State::Running && c.revision != d.revision));
                continue;
            }
            prop_assert!(here.iter().all(|c| c.revision == d.revision), "ordinal {} left {:?}: {:?}", o, l, here);
            let completed = here.iter().filter(|c| c.completed()).count();
            let none_needed = recorded && matches!(l, Left::Nothing | Left::OldCompleted);
            prop_assert_eq!(completed, usize::from(!none_needed), "ordinal {} left {:?}", o, l);
            prop_assert_eq!(here.len(), completed);
        }
    }

    #[test]
    fn law3_and_4_running_tasks_and_output_are_left_alone(lefts in prop::collection::vec(left(), 0..4), recorded in any::<bool>()) {
        let (host, d) = world(&lefts, recorded);
        let p = plan(&host, &d);
        for s in steps(&p) {
            match s {
                Step::Stop { id, .. } => {
                    let c = host.containers.iter().find(|c| &c.id == id).expect("stops a container that exists");
                    prop_assert!(c.state != State::Running, "stops running {}", c.name);
                }
                Step::Remove { id, .. } => {
                    let c = host.containers.iter().find(|c| &c.id == id).expect("removes a container that exists");
                    let current = c.labels.get(super::model::labels::REVISION) == Some(&d.revision);
                    prop_assert!(!(current && c.exit_code == Some(0) && c.state == State::Exited), "removes completed {}", c.name);
                }
                _ => {}
            }
        }
    }
}

#[test]
fn a_failed_task_runs_again_and_plan_says_why() {
    let (host, d) = world(&[Left::Failed], false);
    let p = plan(&host, &d);
    let change = &p.sets[0].changes[0];
    let super::plan::Action::Replace { reasons } = &change.action else { panic!("{change:?}") };
    assert_eq!(reasons[0], super::plan::Reason::TaskFailed { state: State::Exited, exit_code: Some(3) });
    assert!(matches!(change.steps.last(), Some(Step::WaitExit { .. })));
}

#[test]
fn an_earlier_revision_that_still_runs_is_waited_for_not_stopped() {
    let (host, d) = world(&[Left::OldRunning], false);
    assert!(plan(&host, &d).is_empty());
    // Once it finished, the new revision runs and the old container goes after it completed.
    let (mut host, _) = world(&[Left::OldCompleted], false);
    let p = plan(&host, &d);
    let kinds: Vec<&str> = steps(&p).iter().map(|s| s.kind()).collect();
    assert_eq!(kinds, ["ensureNetwork", "ensureImage", "create", "start", "waitExit", "remove"]);
    host.apply_plan(&p, std::slice::from_ref(&d)).unwrap();
    assert!(plan(&host, &d).is_empty());
}

#[test]
fn a_completed_container_being_removed_is_not_a_failed_run() {
    let (mut host, d) = world(&[Left::Completed], true);
    host.containers[0].state = State::Removing;
    assert!(plan(&host, &d).is_empty(), "recorded complete: nothing runs again");
}
