//! A generated batch of result records shaped like real ones (images and videos, failures, the four built-in
//! tasks, translations in Latin, Devanagari, Han, Arabic and Hebrew script) with pictures, for tests and benchmarks.

use vislingo_proto::result::RESULT_SCHEMA_VERSION;
use vislingo_proto::result::{AssetError, MediaInfo, ResultRequest, TaskOutput, Timings, Translation, VideoMedia};
use vislingo_proto::{AssetKind, AssetResult, Lang};

use crate::{frame_mosaic, thumbnail_from_rgb, Preview, RgbPixels, Thumbnail};

/// The languages of the generated translations: one per script the page must render.
pub const LANGS: [&str; 5] = ["fra_Latn", "hin_Deva", "zho_Hans", "arb_Arab", "heb_Hebr"];
/// Every tag the generator uses, English first, then in the order of [`LANGS`].
pub const TAGS: [[&str; 6]; 16] = [
    ["beach", "plage", "समुद्र तट", "海滩", "شاطئ", "חוף"],
    ["sunset", "coucher de soleil", "सूर्यास्त", "日落", "غروب الشمس", "שקיעה"],
    ["dog", "chien", "कुत्ता", "狗", "كلب", "כלב"],
    ["city", "ville", "शहर", "城市", "مدينة", "עיר"],
    ["mountain", "montagne", "पहाड़", "山", "جبل", "הר"],
    ["car", "voiture", "कार", "汽车", "سيارة", "מכונית"],
    ["food", "nourriture", "भोजन", "食物", "طعام", "אוכל"],
    ["people", "personnes", "लोग", "人们", "أشخاص", "אנשים"],
    ["night", "nuit", "रात", "夜晚", "ليل", "לילה"],
    ["forest", "forêt", "जंगल", "森林", "غابة", "יער"],
    ["water", "eau", "पानी", "水", "ماء", "מים"],
    ["coffee", "café", "कॉफ़ी", "咖啡", "قهوة", "קפה"],
    ["bicycle", "vélo", "साइकिल", "自行车", "دراجة", "אופניים"],
    ["snow", "neige", "बर्फ़", "雪", "ثلج", "שלג"],
    ["flowers", "fleurs", "फूल", "花", "زهور", "פרחים"],
    ["bridge", "pont", "पुल", "桥", "جسر", "גשר"],
];

/// Per task, the English text and its "translations" (fixed sentences in each language with the asset's first
/// two tags filled in for `{0}` and `{1}`; they read as translations, which is all the page needs).
const TEXTS: [(&str, [&str; 6]); 3] = [
    (
        "describe",
        [
            "A bright photograph of a {0} beside a {1} in the late afternoon. The composition places the main \
             subject slightly off centre, with soft golden light falling across the scene and long gentle \
             shadows in the foreground.\n\nTextures of sand, stone and leaves are clearly visible, and the colours \
             are warm and slightly muted. The mood is calm and unhurried, and the setting suggests a quiet day \
             away from the city.",
            "Une photographie lumineuse de {0} près de {1} en fin d’après-midi. La composition place le sujet \
             légèrement hors du centre, baigné d’une douce lumière dorée. L’ambiance est calme et paisible.",
            "दोपहर के अंत में {1} के पास {0} की एक उजली तस्वीर। मुख्य विषय केंद्र से थोड़ा हटकर है और दृश्य पर कोमल \
             सुनहरी रोशनी पड़ रही है। वातावरण शांत और सुकून भरा है।",
            "一张午后时分{1}旁边的{0}的明亮照片。主体略微偏离画面中心，柔和的金色光线洒满整个场景。整体氛围平静而从容。",
            "صورة فوتوغرافية مشرقة لـ{0} بجانب {1} في وقت متأخر من بعد الظهر. يقع الموضوع الرئيسي بعيدًا قليلاً عن \
             المركز، ويغمر المشهد ضوء ذهبي ناعم. الجو هادئ ومريح.",
            "תצלום בהיר של {0} ליד {1} בשעות אחר הצהריים המאוחרות. הנושא המרכזי ממוקם מעט מחוץ למרכז, ואור זהוב \
             ורך נופל על הסצנה. האווירה רגועה ושלווה.",
        ],
    ),
    (
        "sentiment",
        [
            "The overall emotional tone is positive and relaxed. Warm colours and soft light evoke contentment and \
             nostalgia, and the open composition invites the viewer to linger.",
            "Le ton émotionnel général est positif et détendu. Les couleurs chaudes évoquent le contentement.",
            "कुल मिलाकर भावनात्मक स्वर सकारात्मक और सहज है। गर्म रंग संतोष का भाव जगाते हैं।",
            "整体情感基调积极而放松。温暖的色彩唤起满足与怀旧之情。",
            "النبرة العاطفية العامة إيجابية ومريحة. تثير الألوان الدافئة شعورًا بالرضا.",
            "הטון הרגשי הכללי חיובי ורגוע. הצבעים החמים מעוררים תחושת סיפוק.",
        ],
    ),
    (
        "ad",
        [
            "Brand: no brand or product is visible; the image reads as lifestyle imagery.\n\nMessage: escape and \
             simple pleasures, carried by the {0} and the warm light.\n\nAudience: adults planning leisure time.\n\n\
             Improvements: add a clear focal product and a short headline in the empty upper third.",
            "Marque : aucune marque visible. Message : l’évasion et les plaisirs simples, portés par {0}.",
            "ब्रांड: कोई ब्रांड दिखाई नहीं देता। संदेश: {0} के साथ सरल आनंद और सुकून।",
            "品牌：画面中没有可见的品牌。信息：{0}所传达的逃离与简单的快乐。",
            "العلامة التجارية: لا توجد علامة ظاهرة. الرسالة: الهروب والمتع البسيطة مع {0}.",
            "מותג: אין מותג גלוי. מסר: בריחה והנאות פשוטות עם {0}.",
        ],
    ),
];

/// Which records [`batch`] makes videos and failures of.
const VIDEO_EVERY: usize = 7;
const FAILURE_EVERY: usize = 23;

/// `count` records in key order: every 7th a video, every 23rd a failure (a `decode` error), the rest complete,
/// with `tasks` (among `describe`, `tags`, `sentiment`, `ad`) translated into `langs` (among [`LANGS`]).
/// Record `i`'s tags are [`tags_of`]`(i)`.
pub fn batch(count: usize, tasks: &[&str], langs: &[&str]) -> Vec<AssetResult> {
    (0..count).map(|i| record(i, tasks, langs)).collect()
}

/// The English tags of record `i`: four of [`TAGS`], the first two naming its subject.
pub fn tags_of(i: usize) -> Vec<&'static str> {
    (0..4).map(|k| TAGS[(i * 5 + k * 3) % TAGS.len()][0]).collect()
}

fn tag_index(i: usize, k: usize) -> usize {
    (i * 5 + k * 3) % TAGS.len()
}

/// Record `i` of [`batch`].
pub fn record(i: usize, tasks: &[&str], langs: &[&str]) -> AssetResult {
    let langs: Vec<Lang> = langs.iter().map(|code| Lang::parse(code).expect("a FLORES-200 code")).collect();
    let video = i % VIDEO_EVERY == 3;
    let kind = if video { AssetKind::Video } else { AssetKind::Image };
    let asset = match kind {
        AssetKind::Image => format!("photos/{:02}/img_{i:05}.jpg", i % 17),
        AssetKind::Video => format!("clips/clip_{i:05}.mp4"),
    };
    let failed = i % FAILURE_EVERY == 11;
    let request = ResultRequest {
        tasks: tasks.iter().map(|t| t.to_string()).collect(),
        langs: langs.clone(),
        translator: (!langs.is_empty()).then(|| "facebook/nllb-200-distilled-600M".to_string()),
    };
    let model = match kind {
        AssetKind::Image => "unsloth/Llama-3.2-11B-Vision-Instruct",
        AssetKind::Video => "llava-hf/LLaVA-NeXT-Video-7B-hf",
    };
    if failed {
        let message = format!("{asset}: corrupt or truncated image: unexpected end of file after 4096 bytes");
        return AssetResult {
            schema_version: RESULT_SCHEMA_VERSION,
            asset,
            kind,
            model: model.into(),
            request,
            media: None,
            outputs: Vec::new(),
            timings: Timings { decode_s: 0.004, total_s: 0.004, ..Timings::default() },
            error: Some(AssetError { stage: "decode".into(), message }),
        };
    }
    let subject = [TAGS[tag_index(i, 0)], TAGS[tag_index(i, 1)]];
    let outputs: Vec<TaskOutput> = tasks.iter().map(|task| output(i, task, &langs, subject)).collect();
    let generation_s: f64 = outputs.iter().map(|o| o.generation_s).sum();
    let translation_s = 0.4 * langs.len() as f64;
    let media = match kind {
        AssetKind::Image => MediaInfo {
            bytes: 180_000 + (i as u64 * 7919) % 2_000_000,
            width: 1600,
            height: 1200,
            tiles: Some(4),
            video: None,
        },
        AssetKind::Video => {
            let frame_count = 240 + (i as u64 % 5) * 60;
            let frame_indices = (0..8).map(|k| k * frame_count / 8).collect();
            MediaInfo {
                bytes: 4_000_000 + i as u64 * 1000,
                width: 640,
                height: 360,
                tiles: Some(8),
                video: Some(VideoMedia {
                    size_mb: (4_000_000 + i as u64 * 1000) as f64 / 1048576.0,
                    duration_s: frame_count as f64 / 30.0,
                    fps: 30.0,
                    frame_count,
                    frame_count_source: "container".into(),
                    codec: "h264".into(),
                    container: "mov,mp4,m4a,3gp,3g2,mj2".into(),
                    rotation: 0,
                    rotation_applied: true,
                    stored_width: 640,
                    stored_height: 360,
                    frame_indices,
                }),
            }
        }
    };
    AssetResult {
        schema_version: RESULT_SCHEMA_VERSION,
        asset,
        kind,
        model: model.into(),
        request,
        media: Some(media),
        outputs,
        timings: Timings {
            decode_s: 0.02,
            vision_s: 0.8,
            generation_s,
            translation_s,
            total_s: 0.82 + generation_s + translation_s,
        },
        error: None,
    }
}

fn output(i: usize, task: &str, langs: &[Lang], subject: [[&str; 6]; 2]) -> TaskOutput {
    let column = |lang: Lang| 1 + LANGS.iter().position(|code| *code == lang.code()).expect("one of LANGS");
    let fill =
        |template: &str, column: usize| template.replace("{0}", subject[0][column]).replace("{1}", subject[1][column]);
    // The 3rd text of every 11th asset ran into the token limit.
    let finished = !(i % 11 == 5 && task == "sentiment");
    if task == "tags" {
        let tags: Vec<usize> = (0..4).map(|k| tag_index(i, k)).collect();
        let english: Vec<String> = tags.iter().map(|&t| TAGS[t][0].to_string()).collect();
        let mut sorted = english.clone();
        sorted.sort();
        return TaskOutput {
            task: task.into(),
            text: english.join(", "),
            generated_tokens: 12,
            finished,
            tags: Some(english.clone()),
            tags_processed: Some(sorted),
            translations: langs
                .iter()
                .map(|&lang| {
                    let translated: Vec<String> = tags.iter().map(|&t| TAGS[t][column(lang)].to_string()).collect();
                    Translation { lang, text: translated.join(", "), tags: Some(translated) }
                })
                .collect(),
            generation_s: 0.9,
        };
    }
    let texts = TEXTS.iter().find(|(name, _)| *name == task).map_or(&TEXTS[0].1, |(_, texts)| texts);
    let text = fill(texts[0], 0);
    let generated_tokens = (text.split_whitespace().count() as f64 * 1.3) as u32;
    TaskOutput {
        task: task.into(),
        text,
        generated_tokens,
        finished,
        tags: None,
        tags_processed: None,
        translations: langs
            .iter()
            .map(|&lang| Translation { lang, text: fill(texts[column(lang)], column(lang)), tags: None })
            .collect(),
        generation_s: generated_tokens as f64 / 14.0,
    }
}

/// Pictures for generated records: an image gets a picture coloured by its subject, a video a mosaic of 8
/// frames, a failure none. Made once per subject and reused, so that 10 000 records take little time.
#[derive(Default)]
pub struct Previews {
    images: Vec<Option<Thumbnail>>,
    mosaic: Option<Thumbnail>,
}

impl Previews {
    pub fn preview(&mut self, record: &AssetResult) -> Preview {
        if let Some(error) = &record.error {
            return Preview::Unavailable(format!("the asset could not be decoded ({})", error.stage));
        }
        match record.kind {
            AssetKind::Image => {
                let subject = TAGS.iter().position(|tags| Some(tags[0]) == first_tag(record)).unwrap_or(0);
                if self.images.is_empty() {
                    self.images = vec![None; TAGS.len()];
                }
                let thumbnail = self.images[subject].get_or_insert_with(|| {
                    let data = scene(480, 360, subject);
                    thumbnail_from_rgb(RgbPixels { width: 480, height: 360, data: &data }).expect("valid pixels")
                });
                Preview::Image(thumbnail.clone())
            }
            AssetKind::Video => {
                let frames_seen: Vec<u64> = record
                    .media
                    .as_ref()
                    .and_then(|m| m.video.as_ref())
                    .map(|v| v.frame_indices.clone())
                    .unwrap_or_default();
                let mosaic = self.mosaic.get_or_insert_with(|| {
                    let frames: Vec<Vec<u8>> = (0..8).map(|k| scene(320, 180, k * 2)).collect();
                    let pixels: Vec<RgbPixels<'_>> =
                        frames.iter().map(|data| RgbPixels { width: 320, height: 180, data }).collect();
                    frame_mosaic(&pixels).expect("valid frames")
                });
                Preview::Frames { mosaic: mosaic.clone(), frames: frames_seen }
            }
        }
    }
}

fn first_tag(record: &AssetResult) -> Option<&str> {
    record.outputs.iter().find_map(|o| o.tags.as_ref()).and_then(|tags| tags.first()).map(String::as_str)
}

/// A sky-and-ground picture whose colours depend on `seed`.
fn scene(width: u32, height: u32, seed: usize) -> Vec<u8> {
    let hue = (seed * 47 % 256) as u32;
    let mut data = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let horizon = height * 3 / 5 + (x * 7 / width.max(1)) * 4;
            let pixel = if y < horizon {
                [(60 + hue / 3) as u8, (120 + y * 80 / height) as u8, (200 - hue / 4) as u8]
            } else {
                [(hue / 2 + 80) as u8, (100 + (x * 50 / width)) as u8, (40 + hue / 5) as u8]
            };
            data.extend_from_slice(&pixel);
        }
    }
    data
}
