//! The `ragbox` command: parse the command line and dispatch.

use std::process::ExitCode;

use clap::Parser;

// candle allocates per tensor op; mimalloc avoids glibc's page-fault churn there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = ragbox::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(ragbox::cli::run(cli))
}
