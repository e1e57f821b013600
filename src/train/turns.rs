//! Training runs that take turns: a paired, interleaved speed comparison.
//!
//! Comparing two configurations by timing one and then the other lets the host's drift
//! decide the comparison: on a shared VM the same run's tokens/s moves by ±10 % within
//! minutes, as much as the differences worth measuring. [`in_turns`] instead keeps every
//! configuration's run alive at once, each on its own thread, and lets exactly one of them
//! train at a time: a few warm-up steps each, then rounds in which every run trains `steps`
//! steps in turn, `passes` times (the order reversing from pass to pass and rotating from
//! round to round: with two runs and two passes A B B A, B A A B, …), so that each round
//! compares the runs over the same few seconds. Several short passes per round average out
//! the host's step-to-step noise while keeping the runs' turns close together in time: one
//! long turn each would leave the comparison to the drift between them. A run waiting for its
//! turn is blocked in its progress callback, between two steps, and its time there is not
//! counted; after its last turn a run hands over only once its training call has returned.

use super::Progress;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// One turn: run `run` trains until it has done `until` steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// Index of the run whose turn it is.
    pub run: usize,
    /// The run's step count at the end of the turn.
    pub until: usize,
    /// The round this turn belongs to (`None`: warm-up, not timed).
    pub round: Option<usize>,
}

/// The order of turns for `runs` runs: each run's `warm` warm-up steps (run 0 first), then
/// `rounds` rounds of `passes` passes, in each pass every run training `steps` steps. The
/// first pass of round k starts with run k mod `runs` and goes on in index order; each
/// later pass reverses the one before (with two runs and four passes: A B B A A B B A), so
/// that over an even number of passes every run's turns sit, on average, at the middle of
/// the round and a steady drift of the host's speed favours none of them.
pub fn schedule(runs: usize, warm: usize, rounds: usize, passes: usize, steps: usize) -> Vec<Turn> {
    let mut out: Vec<Turn> = (0..runs)
        .map(|run| Turn {
            run,
            until: warm,
            round: None,
        })
        .collect();
    for k in 0..rounds {
        let mut order: Vec<usize> = (0..runs).map(|i| (k + i) % runs).collect();
        for j in 0..passes {
            for &run in &order {
                out.push(Turn {
                    run,
                    until: warm + (k * passes + j + 1) * steps,
                    round: Some(k),
                });
            }
            order.reverse();
        }
    }
    out
}

struct State {
    /// Index into the schedule of the turn being trained.
    turn: usize,
    /// A run ended (an error, or fewer steps than scheduled): nobody waits any more.
    aborted: bool,
}

/// Runs `runs` training runs in turns (see the module docs and [`schedule`]): `train(i,
/// on_step)` must train run i for exactly `warm + rounds·passes·steps` steps, calling
/// `on_step` after each step (as [`super::train`] does with
/// [`super::RunOptions::on_step`]). Returns, per run, what its `train` returned and the
/// seconds it trained in each round (each turn timed from the moment it began to its last
/// step's callback, the round's `passes` turns summed).
///
/// A run that fails, panics or ends before its last turn stops the turn-taking (the others
/// then train their remaining steps without waiting, untimed) and its error is returned
/// (when several fail, the first run's), or its panic resumed.
pub fn in_turns<T, F>(
    runs: usize,
    warm: usize,
    rounds: usize,
    passes: usize,
    steps: usize,
    train: F,
) -> anyhow::Result<Vec<(T, Vec<f64>)>>
where
    T: Send,
    F: Fn(usize, &mut dyn FnMut(Progress)) -> anyhow::Result<T> + Sync,
{
    anyhow::ensure!(
        runs >= 1 && warm >= 1 && rounds >= 1 && passes >= 1 && steps >= 1,
        "turns need at least one run, warm-up step, round, pass and step per turn"
    );
    let plan = schedule(runs, warm, rounds, passes, steps);
    let state = Mutex::new(State {
        turn: 0,
        aborted: false,
    });
    let cv = Condvar::new();
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    // Waits until `turn` is the current one (true) or the turn-taking was aborted (false).
    let wait_for = |turn: usize| -> bool {
        let mut s = lock();
        while s.turn != turn && !s.aborted {
            s = cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        !s.aborted
    };
    let abort = || {
        lock().aborted = true;
        cv.notify_all();
    };
    let (plan, train, wait_for, abort, lock, cv) = (&plan, &train, &wait_for, &abort, &lock, &cv);
    let results: Vec<anyhow::Result<(T, Vec<f64>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..runs)
            .map(|i| {
                scope.spawn(move || {
                    let mine: Vec<usize> = (0..plan.len()).filter(|&t| plan[t].run == i).collect();
                    let mut secs = vec![0.0f64; rounds];
                    let mut next = 0usize; // index into `mine` of the turn being trained
                    let mut began = Instant::now();
                    let mut waiting = wait_for(mine[0]);
                    let mut on_step = |p: Progress| {
                        let Some(&t) = mine.get(next) else { return };
                        if p.step < plan[t].until {
                            return;
                        }
                        if let Some(k) = plan[t].round {
                            secs[k] += began.elapsed().as_secs_f64();
                        }
                        next += 1;
                        // After its last turn the run hands over only once `train` has
                        // returned (below): what it does after its last step (results,
                        // freeing its model and pools) must not overlap the next turn.
                        if let (true, Some(&t2)) = (waiting, mine.get(next)) {
                            lock().turn = t + 1;
                            cv.notify_all();
                            waiting = wait_for(t2);
                        }
                        began = Instant::now();
                    };
                    // A panic must free the runs waiting for a turn before it unwinds.
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        train(i, &mut on_step)
                    }))
                    .unwrap_or_else(|p| {
                        abort();
                        std::panic::resume_unwind(p)
                    });
                    let finished = next == mine.len();
                    if out.is_err() || !finished {
                        abort();
                    } else {
                        let last = mine[mine.len() - 1];
                        let mut s = lock();
                        if s.turn == last {
                            s.turn = last + 1;
                        }
                        drop(s);
                        cv.notify_all();
                    }
                    let out = out?;
                    anyhow::ensure!(
                        finished,
                        "run {i} ended after {} of its {} turns",
                        next,
                        mine.len()
                    );
                    Ok((out, secs))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(step: usize) -> Progress {
        Progress {
            step,
            steps: 0,
            loss: 0.0,
            tokens_per_s: 0.0,
        }
    }

    #[test]
    fn the_schedule_rotates_the_order_of_each_round() {
        let s = schedule(2, 2, 3, 1, 4);
        let runs: Vec<usize> = s.iter().map(|t| t.run).collect();
        assert_eq!(runs, [0, 1, 0, 1, 1, 0, 0, 1]);
        let until: Vec<usize> = s.iter().map(|t| t.until).collect();
        assert_eq!(until, [2, 2, 6, 6, 10, 10, 14, 14]);
        assert_eq!(s[0].round, None);
        assert_eq!(s[7].round, Some(2));
    }

    #[test]
    fn each_pass_of_a_round_reverses_the_one_before() {
        let s = schedule(2, 1, 2, 4, 3);
        let runs: Vec<usize> = s.iter().map(|t| t.run).collect();
        assert_eq!(runs, [0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1]);
        let until: Vec<usize> = s.iter().map(|t| t.until).collect();
        assert_eq!(
            until,
            [1, 1, 4, 4, 7, 7, 10, 10, 13, 13, 16, 16, 19, 19, 22, 22, 25, 25]
        );
        let rounds: Vec<Option<usize>> = s.iter().map(|t| t.round).collect();
        assert_eq!(&rounds[..2], [None, None]);
        assert!(rounds[2..10].iter().all(|&r| r == Some(0)));
        assert!(rounds[10..].iter().all(|&r| r == Some(1)));
        // Three runs: A B C, C B A, then the next round from B.
        let three: Vec<usize> = schedule(3, 1, 2, 2, 1).iter().map(|t| t.run).collect();
        assert_eq!(three, [0, 1, 2, 0, 1, 2, 2, 1, 0, 1, 2, 0, 0, 2, 1]);
    }

    #[test]
    fn only_the_run_whose_turn_it_is_trains() {
        let (runs, warm, rounds, passes, steps) = (3, 2, 3, 2, 3);
        let total = warm + rounds * passes * steps;
        let log = Mutex::new(Vec::new());
        let secs = in_turns(runs, warm, rounds, passes, steps, |i, on_step| {
            for s in 1..=total {
                log.lock().unwrap().push(i);
                std::thread::sleep(std::time::Duration::from_micros(200));
                on_step(progress(s));
            }
            // Work after the last step (a run's results, freeing its model) is its turn's.
            std::thread::sleep(std::time::Duration::from_millis(2));
            log.lock().unwrap().push(i);
            Ok(())
        })
        .unwrap();
        // Who trained each step, in order: exactly the schedule, step by step, each run's
        // closing entry right after its last step.
        let mut expected = Vec::new();
        let mut done = vec![0usize; runs];
        for t in schedule(runs, warm, rounds, passes, steps) {
            expected.extend(std::iter::repeat_n(t.run, t.until - done[t.run]));
            done[t.run] = t.until;
            if t.until == total {
                expected.push(t.run);
            }
        }
        assert_eq!(*log.lock().unwrap(), expected);
        assert_eq!(secs.len(), runs);
        for (_, s) in &secs {
            assert_eq!(s.len(), rounds);
            // a round: two turns of three steps of at least 200 µs each, and nothing like
            // the other runs' turns in between
            assert!(s.iter().all(|&x| (1.2e-3..0.5).contains(&x)), "{s:?}");
        }
    }

    #[test]
    fn a_failing_run_stops_the_turns_without_a_hang() {
        let err = in_turns(2, 1, 3, 1, 2, |i, on_step| {
            for s in 1..=7 {
                if i == 1 && s == 3 {
                    anyhow::bail!("run 1 diverged");
                }
                on_step(progress(s));
            }
            Ok(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("run 1 diverged"), "{err}");
        let short = in_turns(2, 1, 3, 1, 2, |i, on_step| {
            let last = if i == 0 { 4 } else { 7 };
            (1..=last).for_each(|s| on_step(progress(s)));
            Ok(())
        })
        .unwrap_err();
        assert!(short.to_string().contains("run 0 ended after"), "{short}");
    }

    #[test]
    fn a_panicking_run_frees_the_others() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| {
                in_turns(2, 1, 3, 1, 2, |i, on_step| {
                    for s in 1..=7 {
                        assert!(!(i == 1 && s == 2), "run 1 broke");
                        on_step(progress(s));
                    }
                    Ok(())
                })
            });
            let _ = tx.send(r.is_err());
        });
        let panicked = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("in_turns hung after a run panicked");
        assert!(panicked);
    }
}
