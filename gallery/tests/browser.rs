//! The gallery in headless Chromium, driven over the DevTools protocol (`vislingo_gallery::testing::cdp`):
//!
//! - cards, pages, statistics and failures render at desktop (1366x900) and phone (390x844) widths, with no
//!   horizontal overflow on the phone; screenshots of both are saved (`$CARGO_TARGET_TMPDIR/gallery-*.png`;
//!   with `VISLINGO_UPDATE_SCREENSHOT=1` the desktop one also replaces `docs/gallery.png`);
//! - Latin, Devanagari, Han, Arabic and Hebrew text is drawn with real glyphs: Chromium reports which fonts drew
//!   each text node (`CSS.getPlatformFontsForNode`), and every glyph of the node's script must come from a font
//!   that fontconfig says has the node's characters of that script (`fc-list :charset=...`). Tofu would be drawn
//!   by a font without them (Chromium reports the primary font for missing glyphs). Each text is also checked to
//!   take room on the page. What this does not check: that the shaping is linguistically right;
//! - translations carry `lang` and `dir` (`rtl` for Arabic and Hebrew, laid out right to left);
//! - typing a tag into the search box filters the cards (English and translated tags), and the failures filter;
//! - no console error, no exception, and no request other than `file://` URLs of the gallery folder;
//! - a batch of 10 000 records opens on its first page with pagination, and a tag search covers every record.
//!   How fast it opens is measured by `bench/gallery.sh` (BENCHMARKS.md), not asserted here.
//!
//! Needs Chromium and the Noto fonts (`.ci/run` installs them); `CHROMIUM` may name the binary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vislingo_gallery::testing::cdp::{file_url, Browser, Page};
use vislingo_gallery::testing::synthetic::{self, Previews, LANGS};
use vislingo_gallery::{write_gallery, Gallery};
use vislingo_proto::AssetResult;

const WAIT: Duration = Duration::from_secs(60);
const READY: &str = "document.documentElement.dataset.state === 'ready'";

fn write(dir: &Path, records: &[AssetResult], expected_assets: Option<u64>) {
    let gallery = Gallery {
        title: "batch photos-2026-11",
        source: "s3://assets/results/photos-2026-11/",
        records,
        expected_assets,
    };
    let mut previews = Previews::default();
    write_gallery(dir, &gallery, |record| previews.preview(record)).unwrap();
}

fn number(page: &Page<'_>, expression: &str) -> i64 {
    page.eval(expression).unwrap().as_i64().unwrap_or_else(|| panic!("`{expression}` is not a number"))
}

/// Types `text` into the search box (replacing what is there) and waits until the page has filtered and, if
/// `complete`, searched every record.
fn search(page: &Page<'_>, text: &str) {
    page.eval("(() => { const s = document.getElementById('search'); s.focus(); s.select(); })()").unwrap();
    page.insert_text(text).unwrap();
    let wanted = serde_json::to_string(text).unwrap();
    page.wait_for(
        &format!(
            "(() => {{ const d = document.documentElement.dataset; return d.query === {wanted} && d.busy === '0' \
             && (d.search === 'complete' || d.search === 'none'); }})()"
        ),
        WAIT,
    )
    .unwrap_or_else(|e| panic!("search `{text}`: {e}"));
}

/// Records whose tags, English or translated, contain `tag` (what `tag:` matches).
fn tagged(records: &[AssetResult], tag: &str) -> usize {
    records
        .iter()
        .filter(|record| {
            record.outputs.iter().any(|output| {
                let translated = output.translations.iter().flat_map(|t| t.tags.iter().flatten());
                output.tags.iter().flatten().chain(translated).any(|t| t.to_lowercase().contains(tag))
            })
        })
        .count()
}

/// Console errors, exceptions, and requests for anything but files of `dir`.
fn problems(page: &Page<'_>, dir: &Path) -> Vec<String> {
    let folder = format!("{}/", file_url(dir));
    let mut found = Vec::new();
    let mut requests = 0;
    for event in page.events() {
        let params = &event.params;
        match event.method.as_str() {
            "Runtime.consoleAPICalled" if matches!(params["type"].as_str(), Some("error" | "assert")) => {
                found.push(format!("console.{}: {}", params["type"], params["args"]))
            }
            "Runtime.exceptionThrown" => found.push(format!("exception: {}", params["exceptionDetails"])),
            "Log.entryAdded" if params["entry"]["level"] == "error" => found.push(format!("log: {}", params["entry"])),
            "Network.requestWillBeSent" => {
                requests += 1;
                let url = params["request"]["url"].as_str().unwrap_or_default();
                if !url.starts_with(&folder) {
                    found.push(format!("request outside the gallery folder: {url}"));
                }
            }
            "Network.loadingFailed" => found.push(format!("failed load: {params}")),
            _ => {}
        }
    }
    for problem in &mut found {
        if problem.len() > 600 {
            let end = (600..problem.len()).find(|&i| problem.is_char_boundary(i)).unwrap_or(problem.len());
            problem.truncate(end);
            problem.push_str(" ...");
        }
    }
    if requests == 0 {
        found.push("no request seen at all: the network events are not being recorded".into());
    }
    found
}

fn save(name: &str, png: &[u8]) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, png).unwrap();
    let picture = image::load_from_memory(png).unwrap();
    eprintln!("screenshot {}x{}: {}", picture.width(), picture.height(), path.display());
    path
}

/// Characters of `script` (a Unicode block) in `text`, and how many other characters it has.
fn split_script(text: &str, script: &str) -> (BTreeSet<char>, usize) {
    let of_script = |c: char| match script {
        "Latn" => c.is_ascii_alphabetic() || ('\u{c0}'..='\u{24f}').contains(&c),
        "Deva" => ('\u{900}'..='\u{97f}').contains(&c),
        "Hans" => ('\u{4e00}'..='\u{9fff}').contains(&c),
        "Arab" => ('\u{600}'..='\u{6ff}').contains(&c),
        "Hebr" => ('\u{590}'..='\u{5ff}').contains(&c),
        other => panic!("no range for {other}"),
    };
    let chars: BTreeSet<char> = text.chars().filter(|&c| of_script(c)).collect();
    let others = text.chars().filter(|&c| !of_script(c)).count();
    (chars, others)
}

/// Families fontconfig lists as having every one of `chars`.
fn families_with(chars: &BTreeSet<char>) -> BTreeSet<String> {
    let charset: Vec<String> = chars.iter().map(|c| format!("{:x}", *c as u32)).collect();
    let output = Command::new("fc-list")
        .arg(format!(":charset={}", charset.join(" ")))
        .arg("family")
        .output()
        .expect("fc-list (fontconfig) is installed with Chromium");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .flat_map(|line| line.split(','))
        .map(|f| f.trim().to_string())
        .collect()
}

/// The text at `selector` is drawn with glyphs of fonts that have its script's characters, and takes room.
fn assert_script_rendered(page: &Page<'_>, selector: &str, script: &str) {
    let text = page
        .eval(&format!("document.querySelector({}).textContent", serde_json::to_string(selector).unwrap()))
        .unwrap();
    let text = text.as_str().unwrap_or_else(|| panic!("no element `{selector}`"));
    let (chars, others) = split_script(text, script);
    assert!(chars.len() >= 3, "`{selector}` holds no {script} text: {text}");
    let having = families_with(&chars);
    let fonts = page.platform_fonts(selector).unwrap();
    let by_having: u64 = fonts.iter().filter(|(family, _)| having.contains(family)).map(|(_, glyphs)| glyphs).sum();
    let by_others: u64 = fonts.iter().filter(|(family, _)| !having.contains(family)).map(|(_, glyphs)| glyphs).sum();
    eprintln!("{selector} ({script}): drawn with {fonts:?}");
    assert!(
        by_having > 0,
        "{selector}: no glyph drawn by a font with its {script} characters; fonts {fonts:?}, fontconfig: {having:?}"
    );
    // Spaces, digits and punctuation may come from another font; the script's characters may not (tofu).
    assert!(
        by_others <= others as u64,
        "{selector}: {by_others} glyphs from fonts without its {script} characters (only {others} other characters): {fonts:?}"
    );
    let size = page
        .eval(&format!(
            "(() => {{ const r = document.querySelector({}).getBoundingClientRect(); return [r.width, r.height]; }})()",
            serde_json::to_string(selector).unwrap()
        ))
        .unwrap();
    assert!(size[0].as_f64().unwrap() > 50.0 && size[1].as_f64().unwrap() > 10.0, "{selector}: {size}");
}

#[test]
fn the_gallery_renders_every_script_filters_by_tag_and_fits_desktop_and_phone() {
    let dir = tempfile::Builder::new().prefix("vislingo gallery ").tempdir().unwrap();
    let records = synthetic::batch(30, &["describe", "tags", "sentiment", "ad"], &LANGS);
    write(dir.path(), &records, Some(32));
    let browser = Browser::launch().unwrap();
    let page = browser.new_page(1366, 900, false).unwrap();
    page.open_file(&dir.path().join("index.html")).unwrap();
    page.wait_for(READY, WAIT).unwrap();

    // The first page: 24 cards of 30, two pages, statistics, a failure shown as such, a video's frames.
    assert_eq!(number(&page, "document.querySelectorAll('#cards .card').length"), 24);
    assert_eq!(page.eval("document.documentElement.dataset.pages").unwrap(), "2");
    assert!(number(&page, "document.querySelectorAll('#pager-top button').length") >= 3);
    assert_eq!(page.eval("document.title").unwrap(), "batch photos-2026-11 · vislingo");
    let stats = page.eval("document.getElementById('stats').textContent").unwrap();
    let stats = stats.as_str().unwrap();
    assert!(stats.contains("30records") && stats.contains("2missing"), "{stats}");
    let failed = records.iter().position(|r| r.error.is_some()).unwrap();
    let error =
        page.eval(&format!("document.querySelector('.card[data-index=\"{failed}\"] .error').textContent")).unwrap();
    assert!(error.as_str().unwrap().starts_with("decode") && error.as_str().unwrap().contains("corrupt"), "{error}");
    let video = records.iter().position(|r| r.kind == vislingo_proto::AssetKind::Video && r.error.is_none()).unwrap();
    let frames =
        page.eval(&format!("document.querySelector('.card[data-index=\"{video}\"] .frames').textContent")).unwrap();
    assert!(frames.as_str().unwrap().starts_with("Frames 0 · "), "{frames}");
    page.wait_for("Array.from(document.images).filter(i => i.getBoundingClientRect().top < innerHeight).every(i => i.complete && i.naturalWidth > 0)", WAIT)
        .unwrap();

    // Translations: language names, lang and dir attributes, right-to-left layout for Arabic and Hebrew.
    for (code, tag, dir) in [
        ("fra_Latn", "fr-Latn", "ltr"),
        ("hin_Deva", "hi-Deva", "ltr"),
        ("zho_Hans", "zh-Hans", "ltr"),
        ("arb_Arab", "ar-Arab", "rtl"),
        ("heb_Hebr", "he-Hebr", "rtl"),
    ] {
        let attrs = page
            .eval(&format!(
                "(() => {{ const e = document.querySelector('.task-describe .tr[data-lang=\"{code}\"]'); \
                 return [e.lang, e.dir, getComputedStyle(e.querySelector('.text')).direction, e.querySelector('h4').textContent]; }})()"
            ))
            .unwrap();
        assert_eq!(&attrs[0], tag, "{code}");
        assert_eq!(&attrs[1], dir, "{code}");
        assert_eq!(&attrs[2], dir, "{code}: computed direction");
        assert!(attrs[3].as_str().unwrap().contains(code), "{code}: {attrs}");
    }
    let arabic_name = page.eval("document.querySelector('.tr[data-lang=\"arb_Arab\"] h4').textContent").unwrap();
    assert!(arabic_name.as_str().unwrap().starts_with("Modern Standard Arabic"), "{arabic_name}");

    // Every script drawn with real glyphs.
    assert_script_rendered(&page, ".card .task-describe > .text", "Latn");
    assert_script_rendered(&page, ".card .task-describe .tr[data-lang=\"fra_Latn\"] .text", "Latn");
    assert_script_rendered(&page, ".card .task-describe .tr[data-lang=\"hin_Deva\"] .text", "Deva");
    assert_script_rendered(&page, ".card .task-describe .tr[data-lang=\"zho_Hans\"] .text", "Hans");
    assert_script_rendered(&page, ".card .task-describe .tr[data-lang=\"arb_Arab\"] .text", "Arab");
    assert_script_rendered(&page, ".card .task-describe .tr[data-lang=\"heb_Hebr\"] .text", "Hebr");

    let desktop = page.screenshot(false).unwrap();
    save("gallery-desktop.png", &desktop);
    save("gallery-desktop-full.png", &page.screenshot(true).unwrap());
    if std::env::var_os("VISLINGO_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/gallery.png");
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::write(&docs, &desktop).unwrap();
        eprintln!("updated {}", docs.display());
    }

    // Search: an English tag, the same tag in Hindi, a tag chip click, the failures filter, no match.
    let bridges = tagged(&records, "bridge");
    assert!((1..24).contains(&bridges), "the sample has some bridges: {bridges}");
    search(&page, "tag:bridge");
    assert_eq!(number(&page, "document.querySelectorAll('#cards .card').length"), bridges as i64);
    assert_eq!(number(&page, "Number(document.documentElement.dataset.matches)"), bridges as i64);
    assert!(page
        .eval("Array.from(document.querySelectorAll('#cards .card')).every(c => Array.from(c.querySelectorAll('.task-tags .chip')).some(b => b.textContent === 'bridge'))")
        .unwrap()
        .as_bool()
        .unwrap());
    search(&page, "tag:पुल");
    assert_eq!(number(&page, "document.querySelectorAll('#cards .card').length"), bridges as i64);
    search(&page, "no-such-thing-anywhere");
    assert_eq!(number(&page, "document.querySelectorAll('#cards .card').length"), 0);
    search(&page, "");
    assert_eq!(number(&page, "document.querySelectorAll('#cards .card').length"), 24);
    let snow = tagged(&records, "snow");
    page.eval("Array.from(document.querySelectorAll('.task-tags .chip')).find(b => b.textContent === 'snow').click()")
        .unwrap();
    page.wait_for("(() => { const d = document.documentElement.dataset; return d.query === 'tag:snow' && d.busy === '0' && d.search === 'complete'; })()", WAIT)
        .unwrap();
    assert_eq!(number(&page, "document.querySelectorAll('#cards .card').length"), snow as i64);
    search(&page, "");
    page.eval("document.getElementById('errors-only').click()").unwrap();
    let failures = records.iter().filter(|r| r.error.is_some()).count();
    page.wait_for(&format!("document.querySelectorAll('#cards .card.failed').length === {failures} && document.querySelectorAll('#cards .card').length === {failures}"), WAIT)
        .unwrap();
    page.eval("document.getElementById('errors-only').click()").unwrap();

    // The second page.
    page.wait_for("document.querySelectorAll('#cards .card').length === 24", WAIT).unwrap();
    page.eval("document.querySelector('#pager-top button[aria-label=\"Next page\"]').click()").unwrap();
    page.wait_for(
        "document.documentElement.dataset.page === '2' && document.querySelectorAll('#cards .card').length === 6",
        WAIT,
    )
    .unwrap();
    page.eval("document.querySelector('#pager-top button[aria-label=\"Previous page\"]').click()").unwrap();
    page.wait_for("document.documentElement.dataset.page === '1'", WAIT).unwrap();
    page.eval("window.scrollTo(0, 0)").unwrap();

    // The phone, opening the gallery afresh: one column, nothing wider than the screen.
    page.resize(390, 844, true).unwrap();
    page.open_file(&dir.path().join("index.html")).unwrap();
    page.wait_for(&format!("innerWidth === 390 && {READY}"), WAIT).unwrap();
    assert_eq!(page.eval("document.querySelector('#stats details').open").unwrap(), false, "details folded on a phone");
    let overflow = number(&page, "document.documentElement.scrollWidth");
    assert!(overflow <= 390, "the page is {overflow} px wide on a 390 px phone");
    let stacked = page
        .eval("(() => { const c = document.querySelector('#cards .card'); return c.querySelector('.media').getBoundingClientRect().bottom <= c.querySelector('.body').getBoundingClientRect().top + 1; })()")
        .unwrap();
    assert_eq!(stacked, Value::Bool(true), "the picture sits above the text on a phone");
    save("gallery-phone.png", &page.screenshot(false).unwrap());

    let problems = problems(&page, dir.path());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_10000_asset_batch_opens_on_its_first_page_and_a_tag_search_covers_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let records = synthetic::batch(10_000, &["describe", "tags"], &LANGS);
    let started = Instant::now();
    write(dir.path(), &records, None);
    eprintln!("wrote the gallery of 10 000 records in {:.2} s", started.elapsed().as_secs_f64());
    let browser = Browser::launch().unwrap();
    let page = browser.new_page(1366, 900, false).unwrap();
    let opened = Instant::now();
    page.open_file(&dir.path().join("index.html")).unwrap();
    page.wait_for(READY, WAIT).unwrap();
    // Reported, not asserted: bench/gallery.sh measures it.
    let first_page_ms = page.eval("window.vislingoFirstPageMs").unwrap();
    eprintln!(
        "10 000 records: first page rendered {first_page_ms} ms after navigation start ({:.0} ms seen from here)",
        opened.elapsed().as_secs_f64() * 1000.0
    );

    assert_eq!(number(&page, "document.querySelectorAll('#cards .card').length"), 24);
    assert_eq!(page.eval("document.documentElement.dataset.pages").unwrap(), "417");
    let pager = page.eval("document.getElementById('pager-top').textContent").unwrap();
    assert!(pager.as_str().unwrap().contains("1–24 of 10,000"), "{pager}");
    assert!(number(&page, "document.querySelectorAll('#pager-top button').length") >= 5);
    // Only what the first page needs was loaded: the first of 50 chunks.
    let loaded = page.eval("Array.from(document.scripts).map(s => s.getAttribute('src')).filter(s => s && s.startsWith('data/chunk-'))").unwrap();
    assert_eq!(loaded, serde_json::json!(["data/chunk-0000.js"]));

    // The last page, then a tag search over all 10 000 records.
    page.eval("Array.from(document.querySelectorAll('#pager-top button')).find(b => b.textContent === '417').click()")
        .unwrap();
    page.wait_for(
        "document.documentElement.dataset.page === '417' && document.querySelectorAll('#cards .card').length === 16",
        WAIT,
    )
    .unwrap();
    let last = page.eval("document.querySelector('#cards .card:last-child').dataset.asset").unwrap();
    assert_eq!(last.as_str().unwrap(), records[9999].asset);

    let bridges = tagged(&records, "bridge");
    assert!(bridges > 24);
    search(&page, "tag:bridge");
    assert_eq!(number(&page, "Number(document.documentElement.dataset.matches)"), bridges as i64);
    assert_eq!(page.eval("document.documentElement.dataset.page").unwrap(), "1");
    assert_eq!(number(&page, "document.querySelectorAll('#cards .card').length"), 24);
    let pages = bridges.div_ceil(24);
    assert_eq!(page.eval("document.documentElement.dataset.pages").unwrap(), pages.to_string().as_str());
    // Text search reaches texts of every chunk: a word of the Chinese descriptions of bridge assets.
    search(&page, "桥");
    assert!(number(&page, "Number(document.documentElement.dataset.matches)") >= bridges as i64);

    let problems = problems(&page, dir.path());
    assert!(problems.is_empty(), "{problems:#?}");
}
