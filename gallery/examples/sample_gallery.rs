//! Writes a gallery of generated records into a folder, to look at the page without running models:
//! `cargo run -p vislingo-gallery --features testing --example sample_gallery -- /tmp/gallery [COUNT]`.

use vislingo_gallery::testing::synthetic::{self, Previews, LANGS};
use vislingo_gallery::{write_gallery, Gallery};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: sample_gallery DIR [COUNT]");
    let count: usize = args.next().map_or(60, |n| n.parse().expect("COUNT is a number"));
    let records = synthetic::batch(count, &["describe", "tags", "sentiment", "ad"], &LANGS);
    let gallery =
        Gallery { title: "sample batch", source: "generated records", records: &records, expected_assets: None };
    let mut previews = Previews::default();
    let report = write_gallery(dir.as_ref(), &gallery, |record| previews.preview(record)).expect("gallery written");
    println!("{}", report.index.display());
}
