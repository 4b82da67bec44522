//! `worker describe` as a user runs it: the JSON output reproduces transformers' prompt and greedy answer for a
//! fixture image end to end, translations come along, and bad files give an error naming them while the other
//! images still get their answers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("mllama-tiny/reference.json")).unwrap()).unwrap()
}

fn describe(extra: &[&str], images: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .env("RUST_LOG", "error")
        .env("HF_HUB_OFFLINE", "1")
        .args(["describe", "--model"])
        .arg(fixtures().join("mllama-tiny"))
        .arg("--translator")
        .arg(fixtures().join("nllb-tiny"))
        .args(["--greedy", "--exif", "ignore", "--date-string", "26 Jul 2024", "--format", "json"])
        .args(extra)
        .args(images)
        .output()
        .unwrap()
}

fn ids(value: &Value) -> Vec<u64> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

#[test]
fn json_output_reproduces_the_reference_prompt_and_greedy_answer() {
    let reference = reference();
    let case = reference["cases"].as_array().unwrap().iter().find(|c| c["name"] == "describe_landscape").unwrap();
    let image = fixtures().join("mllama-tiny/images/landscape.png");
    let output = describe(&["--prompt", "Describe this image.", "--max-new-tokens", "20"], &[&image]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(ids(&json["prompt_token_ids"]), ids(&case["input_ids"]));
    assert_eq!(ids(&json["token_ids"]), ids(&case["generated"]));
    assert_eq!(json["text"].as_str().unwrap(), case["text"].as_str().unwrap().trim());
    assert_eq!(json["media"]["width"], 150);
    assert!(json["timings"]["total_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn tags_come_back_parsed_and_translated_into_each_language() {
    let image = fixtures().join("mllama-tiny/images/portrait.jpg");
    let output = describe(&["--task", "tags", "--max-new-tokens", "12", "--langs", "fra_Latn,hin_Deva"], &[&image]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["task"], "tags");
    let tags = json["tags"].as_array().unwrap();
    let translations = json["translations"].as_array().unwrap();
    assert_eq!(translations.len(), 2);
    assert_eq!(translations[0]["lang"], "fra_Latn");
    assert_eq!(translations[1]["lang"], "hin_Deva");
    for translation in translations {
        assert_eq!(translation["tags"].as_array().unwrap().len(), tags.len(), "one translation per tag");
    }
    let mut sorted: Vec<String> = tags.iter().map(|t| t.as_str().unwrap().to_string()).collect();
    sorted.sort_by_key(|t| t.to_lowercase());
    let processed: Vec<String> =
        json["tags_processed"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    assert_eq!(processed, sorted);
}

#[test]
fn a_bad_file_is_reported_by_name_and_the_other_images_are_still_described() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.path().join("notes.png");
    std::fs::write(&text, b"these are notes, not a picture").unwrap();
    let good = fixtures().join("mllama-tiny/images/square_small.png");
    let output = describe(&["--max-new-tokens", "4"], &[&empty, &good, &text]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("empty.jpg"), "{stderr}");
    assert!(stderr.contains("notes.png"), "{stderr}");
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let results = json.as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0]["error"]["message"].as_str().unwrap().contains("empty.jpg"));
    assert!(results[1]["error"].is_null());
    assert_eq!(results[1]["token_ids"].as_array().unwrap().len(), 4);
    assert_eq!(results[2]["error"]["stage"], "decode");
}
