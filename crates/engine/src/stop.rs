//! Stopping a run on SIGINT/SIGTERM, within a bound: what both binaries (`redis-sync-manager`
//! and `redis-port sync`) do with the operator's signals.
//!
//! The first signal turns the engines' shutdown watch to true; they drain, write their
//! checkpoints and end (the engine bounds each of its own waits). Whatever one of them
//! still waits for, the process ends [`STOP_BOUND`] after that first signal, and a second
//! signal ends it at once. Either way the exit code is not 0: the stop did not complete.
//! Nothing is lost by that: the target holds the progress (its markers and floor), so the
//! next run continues from what the target acknowledged.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

/// From the first stop signal to the end of the process, at most. A session's own bounds
/// (10 s to apply what was received, 10 s for the target to drain) fit inside it, with room
/// for the last checks and checkpoints.
pub const STOP_BOUND: Duration = Duration::from_secs(30);

/// Exit code when the bound passed before the stop completed: not 0, so that a supervisor
/// does not take an unfinished stop for a clean one.
pub const EXIT_STOP_TIMED_OUT: u8 = 1;

/// A stop signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT: Ctrl-C at a terminal.
    Interrupt,
    /// SIGTERM: what a service manager or `kill` sends.
    Terminate,
}

impl StopSignal {
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// 128 + the signal's number, as a shell reports a process that a signal ended.
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }
}

/// SIGINT and SIGTERM, handled from the moment this is made (not from the first poll), so
/// an early signal is a stop like any other, never the default kill.
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Both handlers, before the run starts: from here a signal asks for a stop instead of
    /// ending the process on the spot (the default action).
    pub fn install() -> io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal, of either kind: both ask for the same stop.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.term.recv() => StopSignal::Terminate,
            _ = self.int.recv() => StopSignal::Interrupt,
        }
    }
}

/// Why a stop did not get to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forced {
    /// A second signal came.
    SecondSignal(StopSignal),
    /// [`STOP_BOUND`] passed.
    TimedOut,
}

impl Forced {
    pub fn exit_code(self) -> u8 {
        match self {
            Forced::SecondSignal(s) => s.exit_code(),
            Forced::TimedOut => EXIT_STOP_TIMED_OUT,
        }
    }

    /// One line for the console and the log.
    pub fn describe(self) -> String {
        match self {
            Forced::SecondSignal(s) => format!(
                "second signal ({}): exiting now, exit code {} (what the target acknowledged is kept; the next run continues from it)",
                s.name(),
                s.exit_code()
            ),
            Forced::TimedOut => format!(
                "the stop did not finish within {} s: exiting now, exit code {EXIT_STOP_TIMED_OUT} (what the target acknowledged is kept; the next run continues from it)",
                STOP_BOUND.as_secs()
            ),
        }
    }
}

/// Wait for the first signal and ask for a stop (`stop` turns true, `on_stop` says so),
/// then for a second signal or [`STOP_BOUND`]: returns what then forces the exit. The
/// caller exits with [`Forced::exit_code`]; if the run ends first, this is never answered.
pub async fn stop_on_signals(
    mut signals: StopSignals,
    stop: watch::Sender<bool>,
    on_stop: impl FnOnce(StopSignal),
) -> Forced {
    let first = signals.recv().await;
    on_stop(first);
    // No receiver left means every engine already ended: nothing to stop.
    let _ = stop.send(true);
    tokio::select! {
        second = signals.recv() => Forced::SecondSignal(second),
        _ = tokio::time::sleep(STOP_BOUND) => Forced::TimedOut,
    }
}

/// End the process at once for `forced`: the spill files are removed first (they are of
/// no use to a next run and can be large), the reason goes to the console and the log.
pub fn exit_now(forced: Forced, state_dir: &Path) -> ! {
    let line = forced.describe();
    eprintln!("{line}");
    tracing::error!("{line}");
    rsm_replica::spool::remove_spill_files(state_dir);
    std::process::exit(i32::from(forced.exit_code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_say_how_the_stop_ended() {
        assert_eq!(Forced::SecondSignal(StopSignal::Interrupt).exit_code(), 130);
        assert_eq!(Forced::SecondSignal(StopSignal::Terminate).exit_code(), 143);
        assert_eq!(Forced::TimedOut.exit_code(), 1);
        assert!(Forced::TimedOut.describe().contains("30 s"));
        assert!(Forced::SecondSignal(StopSignal::Interrupt)
            .describe()
            .contains("second signal (SIGINT)"));
    }
}
