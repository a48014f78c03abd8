//! The models the tests run on (fetched by `./install.sh --models-only`), loaded once
//! per test binary and shared by its in-process servers, or loaded for one test alone.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ragbox::config::{Config, EmbeddingPrecision, ModelsConfig};
use ragbox::ml::{Embedder, Generator};

/// The embedding model's folder in this checkout.
pub fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
}

/// The generation model's file in this checkout.
pub fn generation_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(Config::default().models.generation_file)
}

/// One embedding model for all in-process servers of the test binary.
pub fn shared_embedder() -> Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let config = Config::default();
            let models = ModelsConfig {
                embedding_dir: model_dir(),
                ..Default::default()
            };
            Embedder::load(&models, &config.embedding)
                .expect("embedding model: run ./install.sh --models-only first")
        })
        .clone()
}

/// One generation model for all in-process servers of the test binary.
pub fn shared_generator() -> Generator {
    static GENERATOR: OnceLock<Generator> = OnceLock::new();
    GENERATOR.get_or_init(own_generator).clone()
}

/// A generation model of the test's own, whose counters no other test moves.
pub fn own_generator() -> Generator {
    Generator::load(&generation_file(), &Config::default().generation)
        .expect("generation model: run ./install.sh --models-only first")
}

/// An embedding model of the test's own whose dense layers run in int8.
pub fn int8_embedder() -> Embedder {
    let mut settings = Config::default().embedding;
    settings.precision = EmbeddingPrecision::Int8;
    let models = ModelsConfig {
        embedding_dir: model_dir(),
        ..Default::default()
    };
    Embedder::load(&models, &settings).unwrap()
}

/// An embedding model whose queue holds one request of one text: a burst fills it.
pub fn tiny_queue_embedder() -> Embedder {
    let mut settings = Config::default().embedding;
    settings.queue_capacity = 1;
    settings.batch_size = 1;
    let models = ModelsConfig {
        embedding_dir: model_dir(),
        ..Default::default()
    };
    Embedder::load(&models, &settings).unwrap()
}
