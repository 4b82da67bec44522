//! What a gallery folder holds: the page, its data files (read back as the page reads them), one picture per
//! previewed asset, nothing from outside the folder, and safe rewriting of an existing gallery.

use std::path::Path;

use serde_json::Value;
use vislingo_gallery::testing::synthetic::{self, Previews, LANGS};
use vislingo_gallery::{write_gallery, Gallery, GalleryWriter, Preview};
use vislingo_proto::AssetResult;

const TASKS: [&str; 4] = ["describe", "tags", "sentiment", "ad"];

fn write(dir: &Path, records: &[AssetResult]) -> vislingo_gallery::GalleryReport {
    let gallery = Gallery { title: "batch test", source: "s3://b/results/test/", records, expected_assets: Some(500) };
    let mut previews = Previews::default();
    write_gallery(dir, &gallery, |record| previews.preview(record)).unwrap()
}

/// The JSON a data file hands to the page (`window.X=<json>;` or `window.f(n,<json>);`).
fn script_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find(['{', '[']).unwrap();
    let end = text.trim_end().trim_end_matches(';').trim_end_matches(')').len();
    serde_json::from_str(&text[start..end]).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_gallery_holds_the_page_its_data_in_chunks_and_a_picture_per_previewed_asset() {
    let dir = tempfile::tempdir().unwrap();
    let records = synthetic::batch(450, &TASKS, &LANGS);
    let report = write(dir.path(), &records);

    assert_eq!(files(dir.path()), ["data", "gallery.css", "gallery.js", "icon.svg", "index.html", "thumbs"]);
    assert_eq!(files(&dir.path().join("data")), ["chunk-0000.js", "chunk-0001.js", "chunk-0002.js", "meta.js"]);
    let failed = records.iter().filter(|r| r.error.is_some()).count();
    assert!(failed > 0 && records.iter().any(|r| r.kind == vislingo_proto::AssetKind::Video));
    assert_eq!(report.records, 450);
    assert_eq!(report.pictures, 450 - failed);
    assert_eq!(files(&dir.path().join("thumbs")).len(), 450 - failed);

    let meta = script_json(&dir.path().join("data/meta.js"));
    assert_eq!(
        (meta["count"].as_u64(), meta["chunks"].as_u64(), meta["chunk_size"].as_u64()),
        (Some(450), Some(3), Some(200))
    );
    assert_eq!(meta["title"], "batch test");
    assert_eq!(meta["stats"]["records"], 450);
    assert_eq!(meta["stats"]["failed"].as_u64(), Some(failed as u64));
    assert_eq!(meta["stats"]["missing"], 50);
    let langs: Vec<(String, String, String)> = meta["langs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (l["code"].as_str().unwrap().into(), l["tag"].as_str().unwrap().into(), l["dir"].as_str().unwrap().into())
        })
        .collect();
    let expected = [
        ("fra_Latn", "fr-Latn", "ltr"),
        ("hin_Deva", "hi-Deva", "ltr"),
        ("zho_Hans", "zh-Hans", "ltr"),
        ("arb_Arab", "ar-Arab", "rtl"),
        ("heb_Hebr", "he-Hebr", "rtl"),
    ];
    assert_eq!(langs, expected.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())));
    let index = meta["index"].as_array().unwrap();
    assert_eq!(index.len(), 450);
    assert_eq!(index[0][0], records[0].asset.as_str());
    assert_eq!(index[0][3], serde_json::json!(synthetic::tags_of(0)));

    // Every record comes back from its chunk as it went in, with its preview.
    for (number, chunk) in records.chunks(200).enumerate() {
        let items = script_json(&dir.path().join(format!("data/chunk-{number:04}.js")));
        let items = items.as_array().unwrap();
        assert_eq!(items.len(), chunk.len());
        for (item, record) in items.iter().zip(chunk) {
            // Compared as parsed JSON on both sides: serde_json's float parsing is not exact, JavaScript's is.
            let written: Value = serde_json::from_str(&serde_json::to_string(record).unwrap()).unwrap();
            assert_eq!(item["record"], written);
            let preview = &item["preview"];
            match (record.error.is_some(), record.kind) {
                (true, _) => {
                    assert_eq!(preview["kind"], "none");
                    assert!(preview["reason"].as_str().unwrap().contains("decode"), "{preview}");
                }
                (false, kind) => {
                    let src = preview["src"].as_str().unwrap();
                    let picture = image::open(dir.path().join(src)).unwrap();
                    assert_eq!(Some(u64::from(picture.width())), preview["width"].as_u64());
                    assert_eq!(Some(u64::from(picture.height())), preview["height"].as_u64());
                    if kind == vislingo_proto::AssetKind::Video {
                        assert_eq!(preview["kind"], "frames");
                        let seen = &record.media.as_ref().unwrap().video.as_ref().unwrap().frame_indices;
                        assert_eq!(preview["frames"], serde_json::json!(seen));
                    } else {
                        assert_eq!(preview["kind"], "image");
                    }
                }
            }
        }
    }
}

#[test]
fn the_page_refers_only_to_files_in_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &synthetic::batch(3, &TASKS, &LANGS));
    for name in ["index.html", "gallery.css", "gallery.js", "icon.svg"] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        // The SVG namespace is a name, not a request.
        let text = text.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        for needle in
            ["://", "@import", "@font-face", "fetch(", "XMLHttpRequest", "WebSocket", "EventSource", "sendBeacon"]
        {
            assert!(!text.contains(needle), "{name} contains `{needle}`");
        }
    }
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    for reference in ["href=\"icon.svg\"", "href=\"gallery.css\"", "src=\"data/meta.js\"", "src=\"gallery.js\""] {
        assert!(html.contains(reference), "{reference}");
    }
    assert!(html.contains("connect-src 'none'"), "the page declares it makes no requests");
}

#[test]
fn record_text_cannot_end_a_data_script_early() {
    let dir = tempfile::tempdir().unwrap();
    let mut records = synthetic::batch(1, &["describe"], &[]);
    records[0].outputs[0].text = "a </script><script>alert(1)</script> b \u{2028} c".into();
    write(dir.path(), &records);
    let chunk = std::fs::read_to_string(dir.path().join("data/chunk-0000.js")).unwrap();
    assert!(!chunk.contains("</script>") && !chunk.contains('\u{2028}'));
    let back: AssetResult =
        serde_json::from_value(script_json(&dir.path().join("data/chunk-0000.js"))[0]["record"].clone()).unwrap();
    assert_eq!(back, records[0]);
}

#[test]
fn a_new_gallery_in_the_same_folder_replaces_the_old_files_and_leaves_others_alone() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &synthetic::batch(450, &["tags"], &LANGS));
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    std::fs::write(dir.path().join("thumbs/cover.jpg"), "mine").unwrap();
    let report = write(dir.path(), &synthetic::batch(5, &["tags"], &LANGS));
    assert_eq!(files(&dir.path().join("data")), ["chunk-0000.js", "meta.js"]);
    let mut thumbs = files(&dir.path().join("thumbs"));
    assert!(thumbs.contains(&"cover.jpg".to_string()));
    thumbs.retain(|name| name != "cover.jpg");
    assert_eq!(thumbs.len(), report.pictures);
    assert_eq!(std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(), "mine");
}

#[test]
fn a_record_without_a_preview_says_so_and_an_unavailable_one_gives_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let records = synthetic::batch(2, &["describe"], &[]);
    let mut writer = GalleryWriter::create(dir.path()).unwrap();
    writer.add_preview(&records[1].asset, Preview::Unavailable("the asset was deleted".into())).unwrap();
    let gallery = Gallery { title: "t", source: "s", records: &records, expected_assets: None };
    let report = writer.finish(&gallery).unwrap();
    assert_eq!(report.pictures, 0);
    let items = script_json(&dir.path().join("data/chunk-0000.js"));
    assert_eq!(items[0]["preview"]["reason"], "no preview was made for this asset");
    assert_eq!(items[1]["preview"]["reason"], "the asset was deleted");
    assert_eq!(script_json(&dir.path().join("data/meta.js"))["stats"]["missing"], Value::Null);
}
