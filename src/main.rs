//! The `evoattn` binary: parses the command line and runs it ([`cli`]).
//!
//! Exit codes: 0 done; 1 an error (bad input, data, memory or store; finished units are
//! kept); 2 a command-line usage error; 3 `run` finished what it could but some packs
//! failed; 75 `run` stopped on SIGTERM/SIGINT after checkpointing (rerun to resume); 130
//! a second signal stopped it at once.

mod cli;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::dispatch(&args) {
        // A closed pipe (`evoattn genes | head`) is not an error.
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return;
        }
        // 75: stopped by a signal, packs in flight checkpointed, claims released.
        if let Some(i) = e.downcast_ref::<evoattn::interrupt::Interrupted>() {
            eprintln!(
                "stopped: {i}; finished units are stored and runs in flight checkpointed; run the same command again to resume"
            );
            std::process::exit(evoattn::interrupt::EXIT_INTERRUPTED);
        }
        eprintln!("error: {e:#}");
        // 3: the run finished what it could, but some packs failed (README, "Studies").
        let code = if e.downcast_ref::<cli::run::PacksFailed>().is_some() {
            3
        } else {
            1
        };
        std::process::exit(code);
    }
}
