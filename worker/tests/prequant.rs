//! Pre-quantized checkpoints load as they are (`models::prequant`), against the references of `tools/make_fixtures.py
//! prequant` (bitsandbytes 0.48.2, compressed-tensors 0.9.1, transformers 4.46.3):
//! - tensors in bitsandbytes' NF4/FP4 layout (with and without double quantization, partial blocks, odd element
//!   counts) and compressed-tensors' float8 layout (per-tensor, per-channel, per-group scales, a zero point)
//!   dequantize to the libraries' values exactly;
//! - mllama-tiny quantized in both layouts (`SeanScripts/...-nf4` and `neuralmagic/...-FP8-dynamic` shapes) gives
//!   transformers' logits on the dequantized weights within 1e-4 in f32 and its greedy ids exactly, through
//!   `MllamaChat::load` and `worker describe` unchanged; `--quant q8_0` re-quantizes on top;
//! - malformed checkpoints fail with an error that names the tensor and the cause.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;
use vislingo_worker::models::generate::{generate, GenerationParams, RowRequest, Strategy};
use vislingo_worker::models::hub::{read_json, ModelRepo, ModelSource, WeightFiles};
use vislingo_worker::models::mllama::{cross_attention_token_masks, ImageContext, Mllama, MllamaConfig, VisionInput};
use vislingo_worker::models::prequant::bnb::{FP4_TABLE, NF4_TABLE};
use vislingo_worker::models::prequant::{self, PrequantError, PrequantTensors, QuantizationConfig};
use vislingo_worker::models::quant::Quant;

const F32_TOLERANCE: f32 = 1e-4;
const LAYOUTS: [&str; 2] = ["mllama-tiny-nf4", "mllama-tiny-fp8"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tensors_dir() -> PathBuf {
    fixtures().join("prequant/tensors")
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

/// The reference of the tensor-level fixtures and its expected f32 tensors.
struct TensorFixture {
    reference: Value,
    expected: HashMap<String, Tensor>,
}

impl TensorFixture {
    fn load() -> TensorFixture {
        let reference = json(&tensors_dir().join("reference.json"));
        let expected =
            candle_core::safetensors::load(tensors_dir().join("expected.safetensors"), &Device::Cpu).unwrap();
        TensorFixture { reference, expected }
    }

    fn config(&self, file: &str) -> QuantizationConfig {
        QuantizationConfig::from_value(&self.reference["quantization_config"][file]).unwrap()
    }

    fn open(&self, file: &str) -> PrequantTensors {
        // SAFETY: test fixtures, never written while mapped.
        unsafe { PrequantTensors::open(&[tensors_dir().join(file)], self.config(file)).unwrap() }
    }

    fn cases(&self, file: &str) -> Vec<&Value> {
        self.reference["cases"].as_array().unwrap().iter().filter(|c| c["file"] == file).collect()
    }

    fn expected(&self, case: &Value, key: &str) -> &Tensor {
        let name = case[key].as_str().unwrap();
        self.expected.get(name).unwrap_or_else(|| panic!("expected tensor {name}"))
    }
}

/// Bitwise equality of two f32 (or same-dtype) tensors, with the first differing element in the message.
fn assert_same(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    assert_eq!(actual.dtype(), expected.dtype(), "{what}: dtype");
    let a = actual.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let e = expected.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    if let Some(i) = a.iter().zip(&e).position(|(x, y)| x.to_bits() != y.to_bits()) {
        panic!("{what}: element {i} is {} but the reference has {}", a[i], e[i]);
    }
}

#[test]
fn bitsandbytes_nf4_and_fp4_weights_dequantize_to_the_reference_exactly() {
    let f = TensorFixture::load();
    let tensors = f.open("bnb.safetensors");
    let cases = f.cases("bnb.safetensors");
    assert!(cases.iter().any(|c| c["double_quant"] == true) && cases.iter().any(|c| c["quant_type"] == "fp4"));
    for case in cases {
        let name = case["name"].as_str().unwrap();
        assert!(tensors.is_quantized(name), "{name}");
        let weight = tensors.load(name, DType::F32, &Device::Cpu).unwrap();
        assert_same(&weight, f.expected(case, "expected"), name);
    }
}

#[test]
fn float8_weights_dequantize_as_compressed_tensors_computes_them() {
    let f = TensorFixture::load();
    let tensors = f.open("fp8.safetensors");
    for case in f.cases("fp8.safetensors") {
        let name = case["name"].as_str().unwrap();
        assert!(tensors.is_quantized(name), "{name}");
        assert_same(&tensors.load(name, DType::F32, &Device::Cpu).unwrap(), f.expected(case, "expected"), name);
        // compressed-tensors computes in the scale's dtype: one rounding of the exact product.
        if case.get("expected_in_scale_dtype").is_some() {
            let library = f.expected(case, "expected_in_scale_dtype");
            let weight = tensors.load(name, library.dtype(), &Device::Cpu).unwrap();
            assert_same(&weight, library, &format!("{name} in {:?}", library.dtype()));
        }
    }
}

/// A half-precision request casts the f32 dequantization once, as the CUDA kernels do.
#[test]
fn half_precision_weights_are_the_f32_dequantization_rounded_once() {
    let f = TensorFixture::load();
    for file in ["bnb.safetensors", "fp8.safetensors"] {
        let tensors = f.open(file);
        for case in f.cases(file) {
            let name = case["name"].as_str().unwrap();
            for dtype in [DType::BF16, DType::F16] {
                let weight = tensors.load(name, dtype, &Device::Cpu).unwrap();
                let expected = f.expected(case, "expected").to_dtype(dtype).unwrap();
                assert_same(&weight, &expected, &format!("{name} in {dtype:?}"));
            }
        }
    }
}

#[test]
fn modules_left_dense_pass_through_unchanged() {
    let f = TensorFixture::load();
    for entry in f.reference["passthrough"].as_array().unwrap() {
        let file = entry["file"].as_str().unwrap();
        let tensors = f.open(file);
        let name = entry["name"].as_str().unwrap();
        assert!(!tensors.is_quantized(name), "{name}");
        assert_same(&tensors.load(name, DType::F32, &Device::Cpu).unwrap(), f.expected(entry, "expected"), name);
    }
    let bias = f.open("bnb.safetensors").load("skipped.bias", DType::BF16, &Device::Cpu).unwrap();
    assert_eq!((bias.dims(), bias.dtype()), (&[4usize][..], DType::BF16));
}

/// The tables the loader decodes with are bit for bit the `quant_map` bitsandbytes stores (`get_4bit_type`).
#[test]
fn stored_quant_maps_equal_the_nf4_and_fp4_tables() {
    let f = TensorFixture::load();
    let stored = candle_core::safetensors::load(tensors_dir().join("bnb.safetensors"), &Device::Cpu).unwrap();
    for case in f.cases("bnb.safetensors") {
        let name = case["name"].as_str().unwrap();
        let map = stored[&format!("{name}.quant_map")].to_vec1::<f32>().unwrap();
        let table = if case["quant_type"] == "nf4" { NF4_TABLE } else { FP4_TABLE };
        assert_eq!(map.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), table.map(f32::to_bits).to_vec(), "{name}");
    }
}

// ------------------------------------------------------------------------------------------------ error cases

/// The tensors of `file` with `edit` applied, written to a temporary checkpoint and opened.
fn edited(file: &str, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> (tempfile::TempDir, PrequantTensors) {
    let f = TensorFixture::load();
    let mut tensors = candle_core::safetensors::load(tensors_dir().join(file), &Device::Cpu).unwrap();
    edit(&mut tensors);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    // SAFETY: a private temporary file.
    let opened = unsafe { PrequantTensors::open(&[path], f.config(file)).unwrap() };
    (dir, opened)
}

fn bytes_tensor(bytes: &[u8]) -> Tensor {
    Tensor::from_vec(bytes.to_vec(), bytes.len(), &Device::Cpu).unwrap()
}

fn load_error(tensors: &PrequantTensors, name: &str) -> PrequantError {
    tensors.load(name, DType::F32, &Device::Cpu).expect_err("a malformed weight must not load")
}

#[test]
fn a_missing_absmax_or_nested_absmax_is_named() {
    let (_dir, tensors) = edited("bnb.safetensors", |t| {
        t.remove("nf4_odd.weight.absmax");
        t.remove("nf4_nested.weight.nested_absmax");
    });
    for (weight, companion) in
        [("nf4_odd.weight", "nf4_odd.weight.absmax"), ("nf4_nested.weight", "nf4_nested.weight.nested_absmax")]
    {
        let error = load_error(&tensors, weight);
        assert!(
            matches!(&error, PrequantError::MissingCompanion { tensor, companion: c } if tensor == weight && c == companion),
            "{error}"
        );
    }
}

#[test]
fn a_uint8_weight_without_quant_state_is_refused() {
    let (_dir, tensors) = edited("bnb.safetensors", |t| {
        t.remove("fp4.weight.quant_state.bitsandbytes__fp4");
    });
    let error = load_error(&tensors, "fp4.weight");
    assert!(matches!(&error, PrequantError::MissingCompanion { companion, .. } if companion.contains("quant_state")));
    assert!(error.to_string().contains("fp4.weight"), "{error}");
}

#[test]
fn malformed_quant_state_json_and_unknown_quant_types_are_refused() {
    let state = "nf4_bf16.weight.quant_state.bitsandbytes__nf4";
    let (_dir, tensors) = edited("bnb.safetensors", |t| {
        t.insert(state.into(), bytes_tensor(b"{\"quant_type\": \"nf4\", \"blocksize\":"));
    });
    let error = load_error(&tensors, "nf4_bf16.weight");
    assert!(matches!(&error, PrequantError::BadQuantState { tensor, .. } if tensor == "nf4_bf16.weight"), "{error}");

    let (_dir, tensors) = edited("bnb.safetensors", |t| {
        let json = String::from_utf8(t[state].to_vec1::<u8>().unwrap()).unwrap().replace("\"nf4\"", "\"af4\"");
        t.insert(state.into(), bytes_tensor(json.as_bytes()));
    });
    let error = load_error(&tensors, "nf4_bf16.weight");
    assert!(matches!(&error, PrequantError::UnsupportedQuantType { quant_type, .. } if quant_type == "af4"), "{error}");
}

#[test]
fn an_absmax_of_the_wrong_length_is_refused() {
    let (_dir, tensors) = edited("bnb.safetensors", |t| {
        let absmax = t["nf4_odd.weight.absmax"].narrow(0, 0, 2).unwrap();
        t.insert("nf4_odd.weight.absmax".into(), absmax);
    });
    let error = load_error(&tensors, "nf4_odd.weight");
    assert!(matches!(&error, PrequantError::Size { what: "absmax", got: 2, expected: 3, .. }), "{error}");
}

#[test]
fn a_weight_of_another_shape_than_the_model_expects_is_refused() {
    let f = TensorFixture::load();
    let vb = prequant::var_builder(
        &[tensors_dir().join("bnb.safetensors")],
        &f.config("bnb.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(vb.get((5, 37), "nf4_odd.weight").unwrap().dims(), &[5, 37]);
    let error = vb.get((37, 5), "nf4_odd.weight").unwrap_err().to_string();
    assert!(error.contains("nf4_odd.weight") && error.contains("[37, 5]") && error.contains("[5, 37]"), "{error}");
}

#[test]
fn float8_weights_without_a_fitting_scale_are_refused() {
    let (_dir, tensors) = edited("fp8.safetensors", |t| {
        t.remove("channel.weight_scale");
        let scale = Tensor::ones((9, 5), DType::F32, &Device::Cpu).unwrap();
        t.insert("channel_bf16.weight_scale".into(), scale);
    });
    let error = load_error(&tensors, "channel.weight");
    assert!(matches!(&error, PrequantError::MissingCompanion { companion, .. } if companion == "channel.weight_scale"));
    let error = load_error(&tensors, "channel_bf16.weight");
    assert!(matches!(&error, PrequantError::ScaleShape { rows: 9, cols: 24, .. }), "{error}");
}

// ------------------------------------------------------------------------------------------------ whole models

/// A quantized mllama-tiny folder, its reference and the mllama-tiny inputs (pixel values) it was run on.
struct ModelFixture {
    dir: PathBuf,
    reference: Value,
    tensors: HashMap<String, Tensor>,
    inputs: HashMap<String, Tensor>,
    base_reference: Value,
}

impl ModelFixture {
    fn load(layout: &str) -> ModelFixture {
        let dir = fixtures().join("prequant").join(layout);
        let base = fixtures().join("mllama-tiny");
        ModelFixture {
            reference: json(&dir.join("reference.json")),
            tensors: candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap(),
            inputs: candle_core::safetensors::load(base.join("reference.safetensors"), &Device::Cpu).unwrap(),
            base_reference: json(&base.join("reference.json")),
            dir,
        }
    }

    fn repo(&self) -> ModelRepo {
        ModelRepo::open(ModelSource::Local(self.dir.clone())).unwrap()
    }

    fn config(&self) -> MllamaConfig {
        read_json(&self.dir.join("config.json")).unwrap()
    }

    /// The model through the loading path of `MllamaChat::load`: config.json's quantization_config decides.
    fn model(&self, quant: Quant) -> Mllama {
        let quantization = QuantizationConfig::from_model_config(&self.dir.join("config.json")).unwrap();
        assert!(quantization.is_some(), "{} has a quantization_config", self.dir.display());
        let weights = WeightFiles::locate(&self.repo()).unwrap();
        let vb = weights.var_builder_with(quantization.as_ref(), DType::F32, &Device::Cpu).unwrap();
        Mllama::new_quantized(&self.config(), vb, quant).unwrap()
    }

    fn cases(&self) -> Vec<&Value> {
        self.reference["cases"].as_array().unwrap().iter().collect()
    }

    fn vision_input(&self, image: &str) -> VisionInput {
        let meta = &self.base_reference["images"][image];
        VisionInput {
            pixel_values: self.inputs[&format!("image.{image}.pixel_values")].squeeze(0).unwrap(),
            aspect_ratio_ids: vec![meta["aspect_ratio_id"].as_u64().unwrap() as u32],
            aspect_ratio_mask: vec![ids(&meta["aspect_ratio_mask"]).into_iter().map(|v| v as u8).collect()],
        }
    }

    fn context(&self, model: &Mllama, case: &Value, prompt: &[u32]) -> Option<ImageContext> {
        let image = case["image"].as_str()?;
        let tiles = self.base_reference["images"][image]["num_tiles"].as_u64().unwrap() as usize;
        let max_tiles = model.config().vision_config.max_num_tiles;
        Some(ImageContext {
            states: model.encode_images(&self.vision_input(image)).unwrap(),
            token_masks: vec![cross_attention_token_masks(
                prompt,
                model.config().image_token_index,
                &[tiles],
                max_tiles,
            )],
            patches_per_tile: model.patches_per_tile(),
        })
    }

    fn prompt_logits(&self, model: &Mllama, case: &Value) -> Tensor {
        let prompt = ids(&case["input_ids"]);
        let mut session = model.start(1, self.context(model, case, &prompt)).unwrap();
        session.prefill_logits(&[prompt]).unwrap().squeeze(0).unwrap()
    }

    fn expected_logits(&self, case: &Value) -> &Tensor {
        &self.tensors[&format!("case.{}.logits", case["name"].as_str().unwrap())]
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape");
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn prequantized_checkpoints_give_transformers_logits_on_their_dequantized_weights_within_1e4() {
    for layout in LAYOUTS {
        let f = ModelFixture::load(layout);
        let model = f.model(Quant::None);
        for case in f.cases() {
            let diff = max_abs_diff(&f.prompt_logits(&model, case), f.expected_logits(case));
            println!("{layout} {}: max |diff| = {diff:.2e}", case["name"]);
            assert!(diff < F32_TOLERANCE, "{layout} {}: logits differ by {diff}", case["name"]);
        }
    }
}

#[test]
fn prequantized_checkpoints_give_transformers_greedy_ids_exactly() {
    for layout in LAYOUTS {
        let f = ModelFixture::load(layout);
        let model = f.model(Quant::None);
        let eos = ids(&json(&f.dir.join("generation_config.json"))["eos_token_id"]);
        for case in f.cases() {
            let prompt = ids(&case["input_ids"]);
            let mut session = model.start(1, f.context(&model, case, &prompt)).unwrap();
            let params = GenerationParams {
                strategy: Strategy::Greedy,
                max_new_tokens: f.reference["max_new_tokens"].as_u64().unwrap() as usize,
                min_new_tokens: 0,
                eos_token_ids: eos.clone(),
                repetition_penalty: 1.0,
            };
            let out = generate(&mut session, &[RowRequest { prompt, forced: vec![] }], &params).unwrap();
            assert_eq!(out[0].new_tokens(), ids(&case["generated"]).as_slice(), "{layout} {}", case["name"]);
        }
    }
}

/// `MllamaChat::load` takes either folder unchanged: decode the fixture image, preprocess, prompt and generate.
#[test]
fn the_chat_model_loads_prequantized_folders_and_answers_as_transformers() {
    use vislingo_worker::media::{decode_file, DecodeOptions};
    use vislingo_worker::models::mllama::chat::{ImagePrompt, MllamaChat};

    for layout in LAYOUTS {
        let f = ModelFixture::load(layout);
        let mut chat = MllamaChat::load(&f.repo(), DType::F32, &Device::Cpu, Quant::None).unwrap();
        chat.date_string = Some(f.reference["date_string"].as_str().unwrap().to_string());
        let case = f.cases().into_iter().find(|c| c["name"] == "describe_landscape").unwrap();
        let image = fixtures().join("mllama-tiny/images/landscape.png");
        let image = decode_file(image, &DecodeOptions::pillow_parity()).unwrap();
        let mut settings = chat.default_settings(f.reference["max_new_tokens"].as_u64().unwrap() as usize);
        settings.sampling = None;
        let prompt = ImagePrompt { image: &image, text: "Describe this image." };
        let (answers, _) = chat.answer(&[prompt], &settings).unwrap();
        assert_eq!(answers[0].prompt_token_ids, ids(&case["input_ids"]), "{layout}");
        assert_eq!(answers[0].token_ids, ids(&case["generated"]), "{layout}");
        assert_eq!(answers[0].text, case["text"].as_str().unwrap(), "{layout}");
    }
}

/// `--quant q8_0` re-quantizes the dequantized text decoder: the logits stay within 5% of the largest one
/// (measured: 1.6% for nf4, 1.8% for fp8, like the dense fixture's 1.3%); Q4K leaves this fixture's 64/96-wide
/// layers dense (not multiples of 256), so its logits are the reference's.
#[test]
fn requantizing_a_prequantized_checkpoint_on_load_stays_close() {
    for layout in LAYOUTS {
        let f = ModelFixture::load(layout);
        let case = f.cases().into_iter().find(|c| c["name"] == "describe_landscape").unwrap();
        let expected = f.expected_logits(case);
        let range = expected.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        for (quant, tolerance) in [(Quant::Q8_0, 0.05 * range), (Quant::Q4k, F32_TOLERANCE)] {
            let diff = max_abs_diff(&f.prompt_logits(&f.model(quant), case), expected);
            println!("{layout} {quant}: max |diff| = {diff:.3e} ({:.2e} of the largest logit)", diff / range);
            assert!(diff < tolerance, "{layout} {quant}: logits differ by {diff}");
        }
    }
}

/// `worker describe --model DIR` on a pre-quantized folder prints transformers' greedy answer.
#[test]
fn worker_describe_runs_on_prequantized_folders() {
    for layout in LAYOUTS {
        let f = ModelFixture::load(layout);
        let case = f.cases().into_iter().find(|c| c["name"] == "describe_landscape").unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
            .env("RUST_LOG", "error")
            .env("HF_HUB_OFFLINE", "1")
            .args(["describe", "--model"])
            .arg(&f.dir)
            .args(["--greedy", "--exif", "ignore", "--date-string", "26 Jul 2024", "--format", "json"])
            .args(["--prompt", "Describe this image.", "--max-new-tokens", "20"])
            .arg(fixtures().join("mllama-tiny/images/landscape.png"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{layout}: {}", String::from_utf8_lossy(&output.stderr));
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(ids(&answer["token_ids"]), ids(&case["generated"]), "{layout}");
    }
}

/// A quantization method vislingo cannot read stops the load with a message naming it, before any weight.
#[test]
fn an_unsupported_quantization_method_is_named_when_loading() {
    use vislingo_worker::models::mllama::chat::MllamaChat;

    let f = ModelFixture::load("mllama-tiny-nf4");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&f.dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let mut config = json(&f.dir.join("config.json"));
    config["quantization_config"] = serde_json::json!({"quant_method": "awq", "bits": 4, "group_size": 128});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let repo = ModelRepo::open(ModelSource::Local(dir.path().into())).unwrap();
    let error = MllamaChat::load(&repo, DType::F32, &Device::Cpu, Quant::None).unwrap_err().to_string();
    assert!(error.contains("quant_method `awq` is not supported"), "{error}");
}

/// The same VarBuilder API serves dense tensors of a pre-quantized checkpoint (embeddings, norms) in any dtype.
#[test]
fn dense_tensors_of_a_prequantized_checkpoint_load_in_the_requested_dtype() {
    let f = ModelFixture::load("mllama-tiny-fp8");
    let quantization = QuantizationConfig::from_model_config(&f.dir.join("config.json")).unwrap();
    let weights = WeightFiles::locate(&f.repo()).unwrap();
    let vb: VarBuilder = weights.var_builder_with(quantization.as_ref(), DType::F16, &Device::Cpu).unwrap();
    let embed = vb.get((625, 64), "language_model.model.embed_tokens.weight").unwrap();
    assert_eq!(embed.dtype(), DType::F16);
    let q_proj = vb.get((64, 64), "language_model.model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!(q_proj.dtype(), DType::F16);
}
