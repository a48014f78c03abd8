//! The local generator on the real SmolLM2 GGUF: tokenizer from the GGUF, chat template,
//! greedy determinism, stop on disconnect.

use ragbox::config::GenerationConfig;
use ragbox::domain::{Event, FinishReason, GenError, Message, Role, Sampling, Usage};
use ragbox::ml::Generator;
use ragbox::ml::generator::LoadState;

fn model_file() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn load(queue: usize) -> Generator {
    load_with(GenerationConfig {
        queue_capacity: queue,
        ..GenerationConfig::default()
    })
}

fn load_with(config: GenerationConfig) -> Generator {
    Generator::load(&model_file(), &config)
        .expect("generation model: run ./install.sh --models-only first")
}

fn greedy(max_tokens: usize) -> Sampling {
    Sampling {
        temperature: 0.0,
        top_p: None,
        seed: 1,
        max_tokens,
        stop: Vec::new(),
        ignore_eos: false,
        frequency_penalty: None,
        presence_penalty: None,
    }
}

fn ask(question: &str) -> Vec<Message> {
    vec![Message::new(Role::User, question)]
}

async fn collect(mut rx: tokio::sync::mpsc::Receiver<Result<Event, GenError>>) -> (String, Usage) {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event.unwrap() {
            Event::Text(t) => text.push_str(&t),
            Event::Done(usage) => return (text, usage),
        }
    }
    panic!("the stream ended without Done");
}

#[tokio::test]
async fn the_prompt_follows_the_gguf_chat_template_and_tokenizes_its_markers() {
    let g = load(2);
    let prompt = g.render(&ask("What is the capital of France?")).unwrap();
    assert!(
        prompt.starts_with("<|im_start|>system\n"),
        "the template adds its default system turn: {prompt}"
    );
    assert!(prompt.ends_with(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    ));
    let ids = g.tokenize(&prompt).unwrap();
    // The turn markers are single special tokens (1 = <|im_start|>, 2 = <|im_end|>),
    // never spelled out byte by byte.
    assert_eq!(ids[0], 1);
    assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 3);
    assert_eq!(ids.iter().filter(|&&id| id == 2).count(), 2);
    assert!(ids.len() < 60, "{} tokens", ids.len());
}

#[tokio::test]
async fn greedy_generation_is_deterministic_and_answers() {
    let g = load_with(GenerationConfig {
        queue_capacity: 2,
        keep_warm_secs: 1,
        ..GenerationConfig::default()
    });
    assert_eq!(
        g.held_bytes(),
        0,
        "nothing is grown before the first answer"
    );
    let ids = g
        .tokenize(&g.render(&ask("What is the capital of France?")).unwrap())
        .unwrap();
    let (first, usage) = collect(g.generate(ids.clone(), greedy(24)).unwrap()).await;
    let (second, _) = collect(g.generate(ids.clone(), greedy(24)).unwrap()).await;
    assert!(!first.trim().is_empty());
    assert_eq!(first, second, "greedy output differs between runs");
    assert!(first.contains("Paris"), "{first}");
    // The cache and buffers stay between answers, and go once the model has been
    // idle for `keep_warm_secs`.
    assert!(g.held_bytes() > 0, "the answer's cache is kept warm");
    let idle = std::time::Instant::now();
    while g.held_bytes() > 0 {
        assert!(
            idle.elapsed() < std::time::Duration::from_secs(10),
            "the cache was not given back after keep_warm_secs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Grown back anew, they give the same answer.
    let (after_idle, _) = collect(g.generate(ids.clone(), greedy(24)).unwrap()).await;
    assert!(g.held_bytes() > 0);
    assert_eq!(
        first, after_idle,
        "greedy output differs after the model went idle"
    );
    assert_eq!(usage.prompt_tokens, ids.len());
    assert!(usage.completion_tokens > 0 && usage.completion_tokens <= 24);

    // A stop sequence ends the text before it.
    let mut sampling = greedy(24);
    sampling.stop = vec!["Paris".into()];
    let (cut, usage) = collect(g.generate(ids, sampling).unwrap()).await;
    assert!(!cut.contains("Paris"), "{cut}");
    assert!(first.starts_with(&cut));
    assert_eq!(usage.finish_reason, FinishReason::Stop);
}

#[tokio::test]
async fn dropping_the_receiver_stops_generation() {
    let g = load(1);
    let ids = g
        .tokenize(
            &g.render(&ask("Write a long story about a dragon."))
                .unwrap(),
        )
        .unwrap();
    let before = g.tokens_generated();
    let mut rx = g.generate(ids.clone(), greedy(1500)).unwrap();
    // Wait for the first piece, so the job is running, then hang up.
    assert!(matches!(rx.recv().await, Some(Ok(Event::Text(_)))));
    drop(rx);
    // The next request runs only after the first has ended (one model thread).
    let (text, usage) = collect(g.generate(ids, greedy(4)).unwrap()).await;
    assert!(!text.is_empty());
    assert_eq!(usage.completion_tokens, 4);
    // The abandoned job produced at most what fits the channel (64) and one more,
    // not the 1,500 it was allowed.
    let abandoned = g.tokens_generated() - before - 4;
    assert!(
        abandoned <= 70,
        "{abandoned} tokens generated for a gone client"
    );
}

#[tokio::test]
async fn a_full_queue_refuses_and_an_oversized_prompt_is_rejected() {
    let g = load(1);
    let ids = g
        .tokenize(&g.render(&ask("Count to one hundred.")).unwrap())
        .unwrap();
    let _running = g.generate(ids.clone(), greedy(200)).unwrap();
    let mut refused = false;
    let mut held = Vec::new();
    for _ in 0..4 {
        match g.generate(ids.clone(), greedy(200)) {
            Ok(rx) => held.push(rx),
            Err(GenError::Busy) => refused = true,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused, "a queue of one took five requests");
    let too_long = vec![100u32; g.context_tokens() + 1];
    assert!(matches!(
        g.generate(too_long, greedy(1)),
        Err(GenError::TooLong(_))
    ));
}

/// A copy of the shipped GGUF cut short: its metadata and tokenizer read, its last
/// tensors missing.
fn truncated_model(dir: &std::path::Path) -> std::path::PathBuf {
    let bytes = std::fs::read(model_file()).unwrap();
    let path = dir.join("cut.gguf");
    std::fs::write(&path, &bytes[..bytes.len() * 9 / 10]).unwrap();
    path
}

#[tokio::test]
async fn a_request_queued_while_the_weights_load_waits_for_them() {
    let g = Generator::start(&model_file(), &GenerationConfig::default()).unwrap();
    // Converting the weights takes far longer than the next line does.
    assert_eq!(g.load_state(), LoadState::Loading);
    let prompt = g.tokenize(&g.render(&ask("Say hi.")).unwrap()).unwrap();
    let rx = g.generate(prompt, greedy(4)).unwrap();
    let (text, usage) = collect(rx).await;
    assert!(!text.is_empty());
    assert!(usage.completion_tokens >= 1);
    assert!(matches!(g.load_state(), LoadState::Ready { secs } if secs > 0.0));
}

#[tokio::test]
async fn a_model_that_fails_to_load_refuses_requests_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let g = Generator::start(&truncated_model(dir.path()), &GenerationConfig::default())
        .expect("the metadata of the cut file is whole");
    let prompt = g.tokenize("hello").unwrap();
    // Queued before the failure is known, or refused after: the reason either way.
    let early = g.generate(prompt.clone(), greedy(4));
    let waited = tokio::task::spawn_blocking({
        let g = g.clone();
        move || g.wait_loaded()
    })
    .await
    .unwrap();
    let Err(GenError::Load(why)) = waited else {
        panic!("a cut file loads: {waited:?}");
    };
    assert!(why.contains("cut.gguf"), "{why}");
    assert!(matches!(g.load_state(), LoadState::Failed(_)));
    if let Ok(mut rx) = early {
        assert!(matches!(rx.recv().await, Some(Err(GenError::Load(_)))));
    }
    assert!(matches!(
        g.generate(prompt, greedy(4)),
        Err(GenError::Load(m)) if m == why
    ));
}
