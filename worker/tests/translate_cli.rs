//! `worker translate` as a user runs it: JSON output comparable with transformers, stdin input, a Hub repo id
//! resolved from an offline Hub cache, and one clear error line for each kind of bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nllb-tiny")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("reference.json")).unwrap()).unwrap()
}

fn worker() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_worker"));
    command.env("RUST_LOG", "error").env("HF_HUB_OFFLINE", "1").env_remove("VISLINGO_TO");
    command
}

fn translate(model: &Path, to: &str, text: &str, extra: &[&str]) -> Output {
    worker()
        .args(["translate", "--model"])
        .arg(model)
        .args(["--to", to, "--max-new-tokens", "24", "--segment", "none"])
        .args(extra)
        .arg(text)
        .output()
        .unwrap()
}

/// A failed run prints exactly one line, starting with `error:`, that contains every `needles`.
fn assert_one_error_line(output: &Output, needles: &[&str]) {
    assert!(!output.status.success(), "expected failure, got success");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one error line expected, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for needle in needles {
        assert!(lines[0].contains(needle), "`{needle}` not in: {stderr}");
    }
}

fn short_case(reference: &Value) -> &Value {
    reference["cases"].as_array().unwrap().iter().find(|c| c["name"] == "short").unwrap()
}

fn json_output(output: &Output) -> Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn assert_matches_greedy_reference(json: &Value, case: &Value) {
    assert_eq!(json["source"]["lang"], "eng_Latn");
    assert_eq!(json["source"]["input_ids"], case["input_ids"]);
    let translations = json["translations"].as_array().unwrap();
    for (translation, target) in translations.iter().zip(case["targets"].as_array().unwrap()) {
        assert_eq!(translation["lang"], target["tgt_lang"]);
        assert_eq!(translation["token_ids"], target["greedy"]);
        assert_eq!(translation["text"], target["greedy_text"]);
    }
}

fn targets_arg(case: &Value) -> String {
    case["targets"].as_array().unwrap().iter().map(|t| t["tgt_lang"].as_str().unwrap()).collect::<Vec<_>>().join(",")
}

#[test]
fn json_output_carries_the_ids_transformers_generates() {
    let reference = reference();
    let case = short_case(&reference);
    let output = translate(&fixture_dir(), &targets_arg(case), case["text"].as_str().unwrap(), &["--format", "json"]);
    assert_matches_greedy_reference(&json_output(&output), case);
}

#[test]
fn text_is_read_from_stdin_when_given_as_a_dash() {
    use std::io::Write;
    let reference = reference();
    let case = short_case(&reference);
    let mut child = worker()
        .args(["translate", "--model"])
        .arg(fixture_dir())
        .args(["--to", &targets_arg(case), "--max-new-tokens", "24", "--segment", "none", "--format", "json", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(case["text"].as_str().unwrap().as_bytes()).unwrap();
    assert_matches_greedy_reference(&json_output(&child.wait_with_output().unwrap()), case);
}

#[test]
fn language_aliases_are_accepted_on_the_command_line() {
    let reference = reference();
    let case = short_case(&reference);
    let output = translate(&fixture_dir(), "french", case["text"].as_str().unwrap(), &["--format", "json"]);
    let json = json_output(&output);
    assert_eq!(json["translations"][0]["lang"], "fra_Latn");
}

#[test]
fn a_hub_repo_id_is_resolved_from_the_hf_home_cache_offline() {
    let reference = reference();
    let case = short_case(&reference);
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let cache = common::hub_cache(&fixture_dir(), "facebook/nllb-tiny-fixture", commit);
    for revision in [None, Some(commit)] {
        let mut command = worker();
        command
            .env("HF_HOME", cache.path())
            .env_remove("HF_HUB_CACHE")
            .args(["translate", "--model", "facebook/nllb-tiny-fixture", "--to", &targets_arg(case)])
            .args(["--max-new-tokens", "24", "--segment", "none", "--format", "json"]);
        if let Some(revision) = revision {
            command.args(["--revision", revision]);
        }
        let output = command.arg(case["text"].as_str().unwrap()).output().unwrap();
        assert_matches_greedy_reference(&json_output(&output), case);
    }
}

#[test]
fn a_repo_missing_from_the_offline_cache_is_reported_with_the_cache_path() {
    let cache = tempfile::tempdir().unwrap();
    let output = worker()
        .env("HF_HOME", cache.path())
        .env_remove("HF_HUB_CACHE")
        .args(["translate", "--model", "facebook/nllb-200-distilled-600M", "--to", "fra_Latn", "Hello."])
        .output()
        .unwrap();
    assert_one_error_line(&output, &["config.json", "facebook/nllb-200-distilled-600M", "HF_HUB_OFFLINE"]);
}

#[test]
fn empty_text_is_refused() {
    assert_one_error_line(&translate(&fixture_dir(), "fra_Latn", "   \n", &[]), &["empty"]);
}

#[test]
fn text_over_the_length_limit_is_refused() {
    let long = "A red bicycle leans against a brick wall in the afternoon sun ".repeat(60);
    assert_one_error_line(&translate(&fixture_dir(), "fra_Latn", &long, &[]), &["too long", "tokens", "at most 256"]);
}

#[test]
fn an_unknown_language_code_suggests_the_nearest_ones() {
    let output = translate(&fixture_dir(), "fra_Latm", "Hello.", &[]);
    assert_one_error_line(&output, &["fra_Latm", "fra_Latn"]);
}

#[test]
fn a_missing_model_folder_is_named() {
    let output = translate(Path::new("/nonexistent/nllb-model"), "fra_Latn", "Hello.", &[]);
    assert_one_error_line(&output, &["/nonexistent/nllb-model", "does not exist"]);
}

fn copy_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    dir
}

#[test]
fn a_truncated_weights_file_is_reported_as_corrupt() {
    let dir = copy_fixture();
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let output = translate(dir.path(), "fra_Latn", "Hello.", &[]);
    assert_one_error_line(&output, &["model.safetensors", "truncated"]);
}

#[test]
fn a_folder_without_weights_is_reported() {
    let dir = copy_fixture();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let output = translate(dir.path(), "fra_Latn", "Hello.", &[]);
    assert_one_error_line(&output, &["no weights", "model.safetensors"]);
}

#[test]
fn weights_that_do_not_match_the_config_are_reported_with_the_tensor() {
    let dir = copy_fixture();
    let config_path = dir.path().join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["encoder_ffn_dim"] = Value::from(config["encoder_ffn_dim"].as_u64().unwrap() * 2);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let output = translate(dir.path(), "fra_Latn", "Hello.", &[]);
    assert_one_error_line(&output, &["do not match", "fc1"]);
}

#[test]
fn a_config_of_another_architecture_is_refused() {
    let dir = copy_fixture();
    let config_path = dir.path().join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["model_type"] = Value::from("llama");
    std::fs::write(&config_path, config.to_string()).unwrap();
    assert_one_error_line(&translate(dir.path(), "fra_Latn", "Hello.", &[]), &["llama", "not an M2M100/NLLB"]);
}

#[test]
fn long_text_is_split_into_sentences_and_rejoined_by_default() {
    let reference = reference();
    let case = reference["cases"].as_array().unwrap().iter().find(|c| c["name"] == "long_multi_paragraph").unwrap();
    let text = case["text"].as_str().unwrap();
    let output = worker()
        .args(["translate", "--model"])
        .arg(fixture_dir())
        .args(["--to", "fra_Latn", "--max-new-tokens", "8", "--format", "json", text])
        .output()
        .unwrap();
    let json = json_output(&output);
    let segments = json["source"]["segments"].as_array().unwrap();
    assert!(segments.len() >= 4, "expected several sentences, got {}", segments.len());
    let translation = &json["translations"][0];
    assert_eq!(translation["segments"].as_array().unwrap().len(), segments.len());
    let paragraphs = text.split("\n\n").count();
    assert_eq!(translation["text"].as_str().unwrap().matches("\n\n").count(), paragraphs - 1, "paragraph breaks kept");
}
