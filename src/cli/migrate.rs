//! `ragbox migrate-vectors --to qdrant|local`: copies every tenant's vectors between the
//! data dir's local store and the Qdrant collection of `[qdrant]`, in this process.
//!
//! It opens both stores itself rather than asking a running server: a server on the
//! local store holds it (sled allows one process) and, running without `qdrant.url`,
//! knows no Qdrant to copy into. So the local store must be free: copy to Qdrant with the
//! server stopped (or already serving from Qdrant), copy back to local before switching
//! the server back.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use crate::services::{Core, migrate, tenants};
use crate::startup;
use crate::store::vectors::VectorStore;

/// Where the vectors go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// From the data dir's local store into the Qdrant collection of `[qdrant]`.
    Qdrant,
    /// From the Qdrant collection of `[qdrant]` into the data dir's local store.
    Local,
}

/// `ragbox migrate-vectors`.
pub async fn migrate_vectors(core: Core, target: Target) -> anyhow::Result<ExitCode> {
    let config = core.config.clone();
    anyhow::ensure!(
        config.qdrant.url().is_some(),
        "qdrant.url is not set: set it (or RAGBOX__QDRANT__URL) to the Qdrant to copy {} ",
        match target {
            Target::Qdrant => "into",
            Target::Local => "from",
        }
    );
    let Some(local) = startup::open_local_vectors(&config).await? else {
        anyhow::bail!(
            "the local vector store in {} is held by another process (a `ragbox serve` on the \
             local store?); stop it first, or start it on Qdrant, which leaves the local store free",
            config.storage.data_dir.display()
        );
    };
    let local: Arc<dyn VectorStore> = Arc::new(local);
    let qdrant: Arc<dyn VectorStore> = Arc::new(startup::open_qdrant_vectors(&config).await?);
    let (from, to) = match target {
        Target::Qdrant => (local, qdrant),
        Target::Local => (qdrant, local),
    };
    let (from_name, to_name) = (from.backend().as_str(), to.backend().as_str());
    eprintln!("copying every tenant's vectors from {from_name} to {to_name}…");
    let done = migrate::copy_vectors(&core, from, to).await?;
    let (items, _) = tenants::list(&core, u32::MAX, 0).await?;
    let slugs: HashMap<String, String> = items
        .into_iter()
        .map(|t| (t.id.as_str().to_owned(), t.slug.to_string()))
        .collect();
    println!("{:<24} {:<36} VECTORS", "SLUG", "ID");
    for c in &done.tenants {
        let slug = slugs.get(c.tenant.as_str()).map_or("?", String::as_str);
        println!("{slug:<24} {:<36} {}", c.tenant, c.vectors);
    }
    println!(
        "copied {} vectors of {} tenants from {from_name} to {to_name} in {:.1} s",
        done.vectors,
        done.tenants.len(),
        done.took.as_secs_f64()
    );
    eprintln!(
        "{}",
        match target {
            Target::Qdrant =>
                "next: keep qdrant.url set and (re)start `ragbox serve`: it then keeps its vectors in Qdrant",
            Target::Local =>
                "next: unset qdrant.url and restart `ragbox serve`: it then keeps its vectors in the data dir",
        }
    );
    Ok(ExitCode::SUCCESS)
}
