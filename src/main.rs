//! The `ragbox` command: parse the command line and dispatch.

use std::process::ExitCode;

use clap::Parser;

// candle allocates per tensor op; mimalloc avoids glibc's page-fault churn there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The extraction child runs before any runtime or thread exists, under its limits.
    let cli = ragbox::cli::Cli::parse();
    if let Some(code) = cli.run_plain() {
        return code;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(ragbox::startup::blocking_threads())
        // Threads that go quiet or end give back what they freed (see `memory`).
        .on_thread_park(ragbox::memory::give_back_when_parked)
        .on_thread_stop(ragbox::memory::give_back)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(ragbox::cli::run(cli));
    drop(runtime);
    // Lines still buffered for the log's writer thread (the runtime's shutdown
    // included) would be lost at exit.
    ragbox::telemetry::flush_logs();
    code
}
