//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

/// Lays out a Hugging Face Hub cache as huggingface_hub writes it under `$HF_HOME/hub`: blobs, a snapshot of
/// symlinks to them, and `refs/main` = `commit`, holding the files of `fixture` (not its `reference*` files).
/// Returns the `HF_HOME` folder.
pub fn hub_cache(fixture: &Path, repo: &str, commit: &str) -> tempfile::TempDir {
    let cache = tempfile::tempdir().unwrap();
    let repo_dir = cache.path().join("hub").join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = repo_dir.join("snapshots").join(commit);
    for dir in [repo_dir.join("blobs"), snapshot.clone(), repo_dir.join("refs")] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    for entry in std::fs::read_dir(fixture).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_file() || entry.file_name().to_string_lossy().starts_with("reference") {
            continue;
        }
        let blob = repo_dir.join("blobs").join(format!("blob-{}", entry.file_name().to_string_lossy()));
        std::fs::copy(entry.path(), &blob).unwrap();
        std::os::unix::fs::symlink(
            Path::new("../../blobs").join(blob.file_name().unwrap()),
            snapshot.join(entry.file_name()),
        )
        .unwrap();
    }
    cache
}

/// The device the model parity tests run on: `VISLINGO_TEST_DEVICE` (`cpu`, `cuda`, `cuda:N`), the CPU by default.
/// CI runs them on the CPU; `bench/gpu.sh` runs the same test binaries, built with `--features cuda`, on a GPU.
pub fn test_device() -> candle_core::Device {
    match std::env::var("VISLINGO_TEST_DEVICE") {
        Ok(spec) if !spec.is_empty() => vislingo_worker::cli::parse_device(&spec)
            .unwrap_or_else(|error| panic!("VISLINGO_TEST_DEVICE={spec}: {error:#}")),
        _ => candle_core::Device::Cpu,
    }
}

/// Decodes `prompts` in one continuous batch, admitting prompt `i` (with its own `max_new_tokens`) before decode
/// step `admit_at[i]`; returns each prompt's answer, in order.
#[allow(dead_code)]
pub fn decode_staggered(
    chat: &vislingo_worker::models::vision_chat::VisionChat,
    prompts: &[vislingo_worker::models::vision_chat::MediaPrompt],
    limits: &[usize],
    admit_at: &[usize],
    settings: &vislingo_worker::models::vision_chat::DecodeSettings,
) -> Vec<vislingo_worker::models::vision_chat::Answer> {
    use vislingo_worker::models::vision_chat::Admit;
    let mut batch = chat.batch::<usize>(settings).unwrap();
    let mut answers: Vec<Option<_>> = vec![None; prompts.len()];
    let mut step = 0;
    while answers.iter().any(Option::is_none) {
        let joining: Vec<Admit<usize>> = (0..prompts.len())
            .filter(|&i| admit_at[i] == step)
            .map(|i| Admit { tag: i, prompt: prompts[i], max_new_tokens: limits[i] })
            .collect();
        let (ended, _) = batch.admit(joining).unwrap();
        for (i, answer) in ended.into_iter().chain(batch.step().unwrap()) {
            answers[i] = Some(answer);
        }
        step += 1;
        assert!(step < 10_000, "the batch ends");
    }
    assert!(batch.is_empty());
    answers.into_iter().map(Option::unwrap).collect()
}
