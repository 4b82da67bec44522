//! FLORES-200 language codes as used by NLLB-200 (`fra_Latn`, `zho_Hant`, ...), with
//! English names, scripts and text direction, and parsing of user input (codes and aliases).
//!
//! # Accepted input
//!
//! [`Lang::parse`] is case-insensitive, ignores surrounding whitespace, treats runs of inner
//! whitespace as one space and accepts `-` for `_` (`FRA-latn` is `fra_Latn`). In order, it accepts:
//!
//! 1. **FLORES-200 codes**: the 202 of NLLB-200, in the order of transformers'
//!    `FAIRSEQ_LANGUAGE_CODES` (4.46.3), which is also the order of the tokenizer's language tokens.
//! 2. **FLORES-200 English names**: `French`, `Modern Standard Arabic`, `Chinese (Traditional)`.
//! 3. **ISO 639-3 codes**: the first part of every FLORES code (`fra`, `arb`, `pes`), plus
//!    macrolanguage and ISO 639-2/B codes that map to one FLORES code (`ara` and `arb` ->
//!    `arb_Arab`, `fas`/`per` -> `pes_Arab`, `msa`/`may` -> `zsm_Latn`, `ger` -> `deu_Latn`).
//! 4. **ISO 639-1 codes** (`fr`, `zh`, `ar`, `no`, `nb`, ...) and the legacy `iw`, `in`, `ji`.
//! 5. **Common English names** not used by FLORES: `arabic` -> `arb_Arab`, `chinese`/`mandarin` ->
//!    `zho_Hans`, `traditional chinese` -> `zho_Hant`, `cantonese` -> `yue_Hant`, `persian`/`farsi` ->
//!    `pes_Arab`, `norwegian` -> `nob_Latn`, `malay` -> `zsm_Latn`, `albanian` -> `als_Latn`, ...
//! 6. **BCP-47-style tags** `language[-Script][-REGION]`, with `-` or `_`: the language subtag is
//!    resolved as above, then
//!    - a script subtag picks the FLORES code in that script (`zh-Hant` -> `zho_Hant`, `ks-Deva` ->
//!      `kas_Deva`, `ku-Arab` -> `ckb_Arab`, `az-Arab` -> `azb_Arab`); a script NLLB does not
//!      have is an error (`sr-Latn`: NLLB has only `srp_Cyrl`);
//!    - without a script, a region is ignored (`en-US`, `pt-BR`, `fr-FR`, `es-419`) except where it
//!      changes the FLORES code: `zh-TW`/`zh-HK`/`zh-MO` -> `zho_Hant` (other `zh-*` -> `zho_Hans`),
//!      `fa-AF` -> `prs_Arab` (Dari), `az-IR` -> `azb_Arab`.
//!
//! Where a name or code covers several FLORES codes, the standard written variety is the default
//! (`ar`/`arabic` -> `arb_Arab`, `zh`/`zho`/`chinese` -> `zho_Hans`, `fa` -> `pes_Arab`). Input is
//! [`LangError::Ambiguous`] only where no variety is the obvious default: Kurdish (`ku`, `kur`,
//! `kurdish`: `kmr_Latn` or `ckb_Arab`) and the languages NLLB has in two scripts, Acehnese (`ace`),
//! Banjar (`bjn`), Kashmiri (`ks`, `kas`), Central Kanuri (`kr`, `kau`, `knc`) and Tamasheq (`tmh`,
//! `taq`): their full codes, or a script subtag (`ks-Deva`), say which.
//!
//! Unknown input gets up to three suggestions, the codes whose code, name or alias is nearest by
//! (optimal string alignment) Damerau-Levenshtein distance.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// One of the 202 FLORES-200 languages NLLB-200 translates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Lang(u8);

/// Which way a language's script runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TextDirection {
    LeftToRight,
    RightToLeft,
}

/// Why input is not a language.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LangError {
    #[error("empty language code; {USE_CODES_HINT}")]
    Empty,
    #[error("empty item {position} in language list `{list}` (doubled or trailing comma?)")]
    EmptyListItem { list: String, position: usize },
    #[error("unknown language `{input}`{}", unknown_hint(.suggestions))]
    Unknown { input: String, suggestions: Vec<&'static str> },
    #[error("language `{input}` is ambiguous: it may be {}; use one of these codes", describe_codes(.candidates, " or "))]
    Ambiguous { input: String, candidates: Vec<&'static str> },
}

const USE_CODES_HINT: &str = "use a FLORES-200 code such as eng_Latn, fra_Latn, spa_Latn or zho_Hans, \
     an ISO 639 code (fr) or an English name (French)";

fn unknown_hint(suggestions: &[&'static str]) -> String {
    if suggestions.is_empty() {
        format!("; {USE_CODES_HINT}")
    } else {
        format!("; did you mean {}? Otherwise {USE_CODES_HINT}", describe_codes(suggestions, ", "))
    }
}

/// `fra_Latn (French), spa_Latn (Spanish)`.
fn describe_codes(codes: &[&'static str], separator: &str) -> String {
    codes
        .iter()
        .map(|code| match lang_by_code(code) {
            Some(lang) => format!("{code} ({})", lang.name()),
            None => (*code).to_string(),
        })
        .collect::<Vec<_>>()
        .join(separator)
}

/// Code and FLORES-200 English name, in the order of transformers 4.46.3
/// `FAIRSEQ_LANGUAGE_CODES` (the NLLB tokenizer's language-token order).
/// (FLORES-200 itself lists Santali as `sat_Olck`; NLLB-200 calls it `sat_Beng`.)
const LANGUAGES: [(&str, &str); 202] = [
    ("ace_Arab", "Acehnese (Arabic script)"),
    ("ace_Latn", "Acehnese (Latin script)"),
    ("acm_Arab", "Mesopotamian Arabic"),
    ("acq_Arab", "Ta’izzi-Adeni Arabic"),
    ("aeb_Arab", "Tunisian Arabic"),
    ("afr_Latn", "Afrikaans"),
    ("ajp_Arab", "South Levantine Arabic"),
    ("aka_Latn", "Akan"),
    ("amh_Ethi", "Amharic"),
    ("apc_Arab", "North Levantine Arabic"),
    ("arb_Arab", "Modern Standard Arabic"),
    ("ars_Arab", "Najdi Arabic"),
    ("ary_Arab", "Moroccan Arabic"),
    ("arz_Arab", "Egyptian Arabic"),
    ("asm_Beng", "Assamese"),
    ("ast_Latn", "Asturian"),
    ("awa_Deva", "Awadhi"),
    ("ayr_Latn", "Central Aymara"),
    ("azb_Arab", "South Azerbaijani"),
    ("azj_Latn", "North Azerbaijani"),
    ("bak_Cyrl", "Bashkir"),
    ("bam_Latn", "Bambara"),
    ("ban_Latn", "Balinese"),
    ("bel_Cyrl", "Belarusian"),
    ("bem_Latn", "Bemba"),
    ("ben_Beng", "Bengali"),
    ("bho_Deva", "Bhojpuri"),
    ("bjn_Arab", "Banjar (Arabic script)"),
    ("bjn_Latn", "Banjar (Latin script)"),
    ("bod_Tibt", "Standard Tibetan"),
    ("bos_Latn", "Bosnian"),
    ("bug_Latn", "Buginese"),
    ("bul_Cyrl", "Bulgarian"),
    ("cat_Latn", "Catalan"),
    ("ceb_Latn", "Cebuano"),
    ("ces_Latn", "Czech"),
    ("cjk_Latn", "Chokwe"),
    ("ckb_Arab", "Central Kurdish"),
    ("crh_Latn", "Crimean Tatar"),
    ("cym_Latn", "Welsh"),
    ("dan_Latn", "Danish"),
    ("deu_Latn", "German"),
    ("dik_Latn", "Southwestern Dinka"),
    ("dyu_Latn", "Dyula"),
    ("dzo_Tibt", "Dzongkha"),
    ("ell_Grek", "Greek"),
    ("eng_Latn", "English"),
    ("epo_Latn", "Esperanto"),
    ("est_Latn", "Estonian"),
    ("eus_Latn", "Basque"),
    ("ewe_Latn", "Ewe"),
    ("fao_Latn", "Faroese"),
    ("pes_Arab", "Western Persian"),
    ("fij_Latn", "Fijian"),
    ("fin_Latn", "Finnish"),
    ("fon_Latn", "Fon"),
    ("fra_Latn", "French"),
    ("fur_Latn", "Friulian"),
    ("fuv_Latn", "Nigerian Fulfulde"),
    ("gla_Latn", "Scottish Gaelic"),
    ("gle_Latn", "Irish"),
    ("glg_Latn", "Galician"),
    ("grn_Latn", "Guarani"),
    ("guj_Gujr", "Gujarati"),
    ("hat_Latn", "Haitian Creole"),
    ("hau_Latn", "Hausa"),
    ("heb_Hebr", "Hebrew"),
    ("hin_Deva", "Hindi"),
    ("hne_Deva", "Chhattisgarhi"),
    ("hrv_Latn", "Croatian"),
    ("hun_Latn", "Hungarian"),
    ("hye_Armn", "Armenian"),
    ("ibo_Latn", "Igbo"),
    ("ilo_Latn", "Ilocano"),
    ("ind_Latn", "Indonesian"),
    ("isl_Latn", "Icelandic"),
    ("ita_Latn", "Italian"),
    ("jav_Latn", "Javanese"),
    ("jpn_Jpan", "Japanese"),
    ("kab_Latn", "Kabyle"),
    ("kac_Latn", "Jingpho"),
    ("kam_Latn", "Kamba"),
    ("kan_Knda", "Kannada"),
    ("kas_Arab", "Kashmiri (Arabic script)"),
    ("kas_Deva", "Kashmiri (Devanagari script)"),
    ("kat_Geor", "Georgian"),
    ("knc_Arab", "Central Kanuri (Arabic script)"),
    ("knc_Latn", "Central Kanuri (Latin script)"),
    ("kaz_Cyrl", "Kazakh"),
    ("kbp_Latn", "Kabiyè"),
    ("kea_Latn", "Kabuverdianu"),
    ("khm_Khmr", "Khmer"),
    ("kik_Latn", "Kikuyu"),
    ("kin_Latn", "Kinyarwanda"),
    ("kir_Cyrl", "Kyrgyz"),
    ("kmb_Latn", "Kimbundu"),
    ("kon_Latn", "Kikongo"),
    ("kor_Hang", "Korean"),
    ("kmr_Latn", "Northern Kurdish"),
    ("lao_Laoo", "Lao"),
    ("lvs_Latn", "Standard Latvian"),
    ("lij_Latn", "Ligurian"),
    ("lim_Latn", "Limburgish"),
    ("lin_Latn", "Lingala"),
    ("lit_Latn", "Lithuanian"),
    ("lmo_Latn", "Lombard"),
    ("ltg_Latn", "Latgalian"),
    ("ltz_Latn", "Luxembourgish"),
    ("lua_Latn", "Luba-Kasai"),
    ("lug_Latn", "Ganda"),
    ("luo_Latn", "Luo"),
    ("lus_Latn", "Mizo"),
    ("mag_Deva", "Magahi"),
    ("mai_Deva", "Maithili"),
    ("mal_Mlym", "Malayalam"),
    ("mar_Deva", "Marathi"),
    ("min_Latn", "Minangkabau (Latin script)"),
    ("mkd_Cyrl", "Macedonian"),
    ("plt_Latn", "Plateau Malagasy"),
    ("mlt_Latn", "Maltese"),
    ("mni_Beng", "Meitei (Bengali script)"),
    ("khk_Cyrl", "Halh Mongolian"),
    ("mos_Latn", "Mossi"),
    ("mri_Latn", "Maori"),
    ("zsm_Latn", "Standard Malay"),
    ("mya_Mymr", "Burmese"),
    ("nld_Latn", "Dutch"),
    ("nno_Latn", "Norwegian Nynorsk"),
    ("nob_Latn", "Norwegian Bokmål"),
    ("npi_Deva", "Nepali"),
    ("nso_Latn", "Northern Sotho"),
    ("nus_Latn", "Nuer"),
    ("nya_Latn", "Nyanja"),
    ("oci_Latn", "Occitan"),
    ("gaz_Latn", "West Central Oromo"),
    ("ory_Orya", "Odia"),
    ("pag_Latn", "Pangasinan"),
    ("pan_Guru", "Eastern Panjabi"),
    ("pap_Latn", "Papiamento"),
    ("pol_Latn", "Polish"),
    ("por_Latn", "Portuguese"),
    ("prs_Arab", "Dari"),
    ("pbt_Arab", "Southern Pashto"),
    ("quy_Latn", "Ayacucho Quechua"),
    ("ron_Latn", "Romanian"),
    ("run_Latn", "Rundi"),
    ("rus_Cyrl", "Russian"),
    ("sag_Latn", "Sango"),
    ("san_Deva", "Sanskrit"),
    ("sat_Beng", "Santali"),
    ("scn_Latn", "Sicilian"),
    ("shn_Mymr", "Shan"),
    ("sin_Sinh", "Sinhala"),
    ("slk_Latn", "Slovak"),
    ("slv_Latn", "Slovenian"),
    ("smo_Latn", "Samoan"),
    ("sna_Latn", "Shona"),
    ("snd_Arab", "Sindhi"),
    ("som_Latn", "Somali"),
    ("sot_Latn", "Southern Sotho"),
    ("spa_Latn", "Spanish"),
    ("als_Latn", "Tosk Albanian"),
    ("srd_Latn", "Sardinian"),
    ("srp_Cyrl", "Serbian"),
    ("ssw_Latn", "Swati"),
    ("sun_Latn", "Sundanese"),
    ("swe_Latn", "Swedish"),
    ("swh_Latn", "Swahili"),
    ("szl_Latn", "Silesian"),
    ("tam_Taml", "Tamil"),
    ("tat_Cyrl", "Tatar"),
    ("tel_Telu", "Telugu"),
    ("tgk_Cyrl", "Tajik"),
    ("tgl_Latn", "Tagalog"),
    ("tha_Thai", "Thai"),
    ("tir_Ethi", "Tigrinya"),
    ("taq_Latn", "Tamasheq (Latin script)"),
    ("taq_Tfng", "Tamasheq (Tifinagh script)"),
    ("tpi_Latn", "Tok Pisin"),
    ("tsn_Latn", "Tswana"),
    ("tso_Latn", "Tsonga"),
    ("tuk_Latn", "Turkmen"),
    ("tum_Latn", "Tumbuka"),
    ("tur_Latn", "Turkish"),
    ("twi_Latn", "Twi"),
    ("tzm_Tfng", "Central Atlas Tamazight"),
    ("uig_Arab", "Uyghur"),
    ("ukr_Cyrl", "Ukrainian"),
    ("umb_Latn", "Umbundu"),
    ("urd_Arab", "Urdu"),
    ("uzn_Latn", "Northern Uzbek"),
    ("vec_Latn", "Venetian"),
    ("vie_Latn", "Vietnamese"),
    ("war_Latn", "Waray"),
    ("wol_Latn", "Wolof"),
    ("xho_Latn", "Xhosa"),
    ("ydd_Hebr", "Eastern Yiddish"),
    ("yor_Latn", "Yoruba"),
    ("yue_Hant", "Yue Chinese"),
    ("zho_Hans", "Chinese (Simplified)"),
    ("zho_Hant", "Chinese (Traditional)"),
    ("zul_Latn", "Zulu"),
];

/// Scripts written right to left. Of these, NLLB-200 has only Arab (21 codes) and Hebr (2);
/// Thaana, Syriac, N'Ko and Adlam are listed so that the rule stays right if codes are added.
const RIGHT_TO_LEFT_SCRIPTS: &[&str] = &["Arab", "Hebr", "Thaa", "Syrc", "Nkoo", "Adlm"];

/// Aliases (normalised: lowercase, `-` not `_`) that name exactly one FLORES code.
const ALIASES: &[(&str, &str)] = &[
    // ISO 639-1.
    ("af", "afr_Latn"),
    ("ak", "aka_Latn"),
    ("am", "amh_Ethi"),
    ("ar", "arb_Arab"),
    ("as", "asm_Beng"),
    ("ay", "ayr_Latn"),
    ("az", "azj_Latn"),
    ("ba", "bak_Cyrl"),
    ("be", "bel_Cyrl"),
    ("bg", "bul_Cyrl"),
    ("bm", "bam_Latn"),
    ("bn", "ben_Beng"),
    ("bo", "bod_Tibt"),
    ("bs", "bos_Latn"),
    ("ca", "cat_Latn"),
    ("cs", "ces_Latn"),
    ("cy", "cym_Latn"),
    ("da", "dan_Latn"),
    ("de", "deu_Latn"),
    ("dz", "dzo_Tibt"),
    ("ee", "ewe_Latn"),
    ("el", "ell_Grek"),
    ("en", "eng_Latn"),
    ("eo", "epo_Latn"),
    ("es", "spa_Latn"),
    ("et", "est_Latn"),
    ("eu", "eus_Latn"),
    ("fa", "pes_Arab"),
    ("ff", "fuv_Latn"),
    ("fi", "fin_Latn"),
    ("fj", "fij_Latn"),
    ("fo", "fao_Latn"),
    ("fr", "fra_Latn"),
    ("ga", "gle_Latn"),
    ("gd", "gla_Latn"),
    ("gl", "glg_Latn"),
    ("gn", "grn_Latn"),
    ("gu", "guj_Gujr"),
    ("ha", "hau_Latn"),
    ("he", "heb_Hebr"),
    ("hi", "hin_Deva"),
    ("hr", "hrv_Latn"),
    ("ht", "hat_Latn"),
    ("hu", "hun_Latn"),
    ("hy", "hye_Armn"),
    ("id", "ind_Latn"),
    ("ig", "ibo_Latn"),
    ("is", "isl_Latn"),
    ("it", "ita_Latn"),
    ("ja", "jpn_Jpan"),
    ("jv", "jav_Latn"),
    ("ka", "kat_Geor"),
    ("kg", "kon_Latn"),
    ("ki", "kik_Latn"),
    ("kk", "kaz_Cyrl"),
    ("km", "khm_Khmr"),
    ("kn", "kan_Knda"),
    ("ko", "kor_Hang"),
    ("ky", "kir_Cyrl"),
    ("lb", "ltz_Latn"),
    ("lg", "lug_Latn"),
    ("li", "lim_Latn"),
    ("ln", "lin_Latn"),
    ("lo", "lao_Laoo"),
    ("lt", "lit_Latn"),
    ("lv", "lvs_Latn"),
    ("mg", "plt_Latn"),
    ("mi", "mri_Latn"),
    ("mk", "mkd_Cyrl"),
    ("ml", "mal_Mlym"),
    ("mn", "khk_Cyrl"),
    ("mr", "mar_Deva"),
    ("ms", "zsm_Latn"),
    ("mt", "mlt_Latn"),
    ("my", "mya_Mymr"),
    ("nb", "nob_Latn"),
    ("ne", "npi_Deva"),
    ("nl", "nld_Latn"),
    ("nn", "nno_Latn"),
    ("no", "nob_Latn"),
    ("ny", "nya_Latn"),
    ("oc", "oci_Latn"),
    ("om", "gaz_Latn"),
    ("or", "ory_Orya"),
    ("pa", "pan_Guru"),
    ("pl", "pol_Latn"),
    ("ps", "pbt_Arab"),
    ("pt", "por_Latn"),
    ("qu", "quy_Latn"),
    ("rn", "run_Latn"),
    ("ro", "ron_Latn"),
    ("ru", "rus_Cyrl"),
    ("rw", "kin_Latn"),
    ("sa", "san_Deva"),
    ("sc", "srd_Latn"),
    ("sd", "snd_Arab"),
    ("sg", "sag_Latn"),
    ("si", "sin_Sinh"),
    ("sk", "slk_Latn"),
    ("sl", "slv_Latn"),
    ("sm", "smo_Latn"),
    ("sn", "sna_Latn"),
    ("so", "som_Latn"),
    ("sq", "als_Latn"),
    ("sr", "srp_Cyrl"),
    ("ss", "ssw_Latn"),
    ("st", "sot_Latn"),
    ("su", "sun_Latn"),
    ("sv", "swe_Latn"),
    ("sw", "swh_Latn"),
    ("ta", "tam_Taml"),
    ("te", "tel_Telu"),
    ("tg", "tgk_Cyrl"),
    ("th", "tha_Thai"),
    ("ti", "tir_Ethi"),
    ("tk", "tuk_Latn"),
    ("tl", "tgl_Latn"),
    ("tn", "tsn_Latn"),
    ("tr", "tur_Latn"),
    ("ts", "tso_Latn"),
    ("tt", "tat_Cyrl"),
    ("tw", "twi_Latn"),
    ("ug", "uig_Arab"),
    ("uk", "ukr_Cyrl"),
    ("ur", "urd_Arab"),
    ("uz", "uzn_Latn"),
    ("vi", "vie_Latn"),
    ("wo", "wol_Latn"),
    ("xh", "xho_Latn"),
    ("yi", "ydd_Hebr"),
    ("yo", "yor_Latn"),
    ("zh", "zho_Hans"),
    ("zu", "zul_Latn"),
    // Withdrawn ISO 639-1 codes still sent by some systems.
    ("iw", "heb_Hebr"),
    ("in", "ind_Latn"),
    ("ji", "ydd_Hebr"),
    // ISO 639-3 macrolanguages and individual languages NLLB names differently.
    ("ara", "arb_Arab"),
    ("aym", "ayr_Latn"),
    ("aze", "azj_Latn"),
    ("cmn", "zho_Hans"),
    ("din", "dik_Latn"),
    ("ekk", "est_Latn"),
    ("fas", "pes_Arab"),
    ("fil", "tgl_Latn"),
    ("ful", "fuv_Latn"),
    ("lav", "lvs_Latn"),
    ("mlg", "plt_Latn"),
    ("mon", "khk_Cyrl"),
    ("msa", "zsm_Latn"),
    ("nep", "npi_Deva"),
    ("nor", "nob_Latn"),
    ("ori", "ory_Orya"),
    ("orm", "gaz_Latn"),
    ("pus", "pbt_Arab"),
    ("que", "quy_Latn"),
    ("sqi", "als_Latn"),
    ("swa", "swh_Latn"),
    ("uzb", "uzn_Latn"),
    ("yid", "ydd_Hebr"),
    ("zlm", "zsm_Latn"),
    ("zho", "zho_Hans"),
    // ISO 639-2/B (bibliographic) codes.
    ("alb", "als_Latn"),
    ("arm", "hye_Armn"),
    ("baq", "eus_Latn"),
    ("bur", "mya_Mymr"),
    ("chi", "zho_Hans"),
    ("cze", "ces_Latn"),
    ("dut", "nld_Latn"),
    ("fre", "fra_Latn"),
    ("geo", "kat_Geor"),
    ("ger", "deu_Latn"),
    ("gre", "ell_Grek"),
    ("ice", "isl_Latn"),
    ("mac", "mkd_Cyrl"),
    ("mao", "mri_Latn"),
    ("may", "zsm_Latn"),
    ("per", "pes_Arab"),
    ("rum", "ron_Latn"),
    ("slo", "slk_Latn"),
    ("tib", "bod_Tibt"),
    ("wel", "cym_Latn"),
    // English names besides the FLORES-200 ones.
    ("albanian", "als_Latn"),
    ("arabic", "arb_Arab"),
    ("standard arabic", "arb_Arab"),
    ("aymara", "ayr_Latn"),
    ("azerbaijani", "azj_Latn"),
    ("azeri", "azj_Latn"),
    ("bangla", "ben_Beng"),
    ("bokmal", "nob_Latn"),
    ("bokmål", "nob_Latn"),
    ("norwegian bokmal", "nob_Latn"),
    ("norwegian", "nob_Latn"),
    ("nynorsk", "nno_Latn"),
    ("cantonese", "yue_Hant"),
    ("castilian", "spa_Latn"),
    ("chewa", "nya_Latn"),
    ("chichewa", "nya_Latn"),
    ("chinese", "zho_Hans"),
    ("mandarin", "zho_Hans"),
    ("simplified chinese", "zho_Hans"),
    ("chinese simplified", "zho_Hans"),
    ("traditional chinese", "zho_Hant"),
    ("chinese traditional", "zho_Hant"),
    ("dinka", "dik_Latn"),
    ("farsi", "pes_Arab"),
    ("persian", "pes_Arab"),
    ("filipino", "tgl_Latn"),
    ("flemish", "nld_Latn"),
    ("fula", "fuv_Latn"),
    ("fulah", "fuv_Latn"),
    ("fulani", "fuv_Latn"),
    ("fulfulde", "fuv_Latn"),
    ("haitian", "hat_Latn"),
    ("irish gaelic", "gle_Latn"),
    ("kirghiz", "kir_Cyrl"),
    ("kirundi", "run_Latn"),
    ("kiswahili", "swh_Latn"),
    ("kongo", "kon_Latn"),
    ("kurmanji", "kmr_Latn"),
    ("sorani", "ckb_Arab"),
    ("latvian", "lvs_Latn"),
    ("luganda", "lug_Latn"),
    ("malagasy", "plt_Latn"),
    ("malay", "zsm_Latn"),
    ("manipuri", "mni_Beng"),
    ("meitei", "mni_Beng"),
    ("minangkabau", "min_Latn"),
    ("modern greek", "ell_Grek"),
    ("mongolian", "khk_Cyrl"),
    ("myanmar", "mya_Mymr"),
    ("oriya", "ory_Orya"),
    ("oromo", "gaz_Latn"),
    ("panjabi", "pan_Guru"),
    ("punjabi", "pan_Guru"),
    ("pashto", "pbt_Arab"),
    ("pedi", "nso_Latn"),
    ("sepedi", "nso_Latn"),
    ("quechua", "quy_Latn"),
    ("scots gaelic", "gla_Latn"),
    ("sesotho", "sot_Latn"),
    ("sotho", "sot_Latn"),
    ("setswana", "tsn_Latn"),
    ("sinhalese", "sin_Sinh"),
    ("siswati", "ssw_Latn"),
    ("swazi", "ssw_Latn"),
    ("slovene", "slv_Latn"),
    ("tamazight", "tzm_Tfng"),
    ("tibetan", "bod_Tibt"),
    ("uighur", "uig_Arab"),
    ("uzbek", "uzn_Latn"),
    ("yiddish", "ydd_Hebr"),
];

/// Two-letter aliases that are not current ISO 639-1 codes (kept for parsing, never written).
const WITHDRAWN_ISO639_1: &[&str] = &["iw", "in", "ji"];

/// Aliases that name several FLORES codes, none of them an obvious default.
/// (The 639-3 codes shared by two FLORES codes, `ace`, `bjn`, `kas`, `knc` and `taq`,
/// are ambiguous without being listed here; `zho` is an alias of `zho_Hans`.)
const AMBIGUOUS_ALIASES: &[(&str, &[&str])] = &[
    ("ku", &["kmr_Latn", "ckb_Arab"]),
    ("kur", &["kmr_Latn", "ckb_Arab"]),
    ("kurdish", &["kmr_Latn", "ckb_Arab"]),
    ("ks", &["kas_Arab", "kas_Deva"]),
    ("kashmiri", &["kas_Arab", "kas_Deva"]),
    ("kr", &["knc_Arab", "knc_Latn"]),
    ("kau", &["knc_Arab", "knc_Latn"]),
    ("kanuri", &["knc_Arab", "knc_Latn"]),
    ("central kanuri", &["knc_Arab", "knc_Latn"]),
    ("tmh", &["taq_Latn", "taq_Tfng"]),
    ("tamasheq", &["taq_Latn", "taq_Tfng"]),
    ("acehnese", &["ace_Arab", "ace_Latn"]),
    ("banjar", &["bjn_Arab", "bjn_Latn"]),
];

/// BCP-47 subtags (region, or script where the script is another FLORES language) that change
/// the FLORES code: (code the language subtag gives, subtag, resulting code).
const SUBTAG_OVERRIDES: &[(&str, &str, &str)] = &[
    ("zho_Hans", "tw", "zho_Hant"),
    ("zho_Hans", "hk", "zho_Hant"),
    ("zho_Hans", "mo", "zho_Hant"),
    ("pes_Arab", "af", "prs_Arab"),
    ("azj_Latn", "ir", "azb_Arab"),
    ("azj_Latn", "arab", "azb_Arab"),
];

impl Lang {
    /// Parses a FLORES-200 code or an alias (see the module docs for what is accepted).
    pub fn parse(input: &str) -> Result<Lang, LangError> {
        let key = normalize(input);
        if key.is_empty() {
            return Err(LangError::Empty);
        }
        let unknown = |suggestions| LangError::Unknown { input: input.trim().to_string(), suggestions };
        let ambiguous = |candidates: &[Lang]| LangError::Ambiguous {
            input: input.trim().to_string(),
            candidates: candidates.iter().map(Lang::code).collect(),
        };
        match index().get(&key) {
            Some(Entry::One(lang)) => return Ok(*lang),
            Some(Entry::Several(candidates)) => return Err(ambiguous(candidates)),
            None => {}
        }
        match parse_language_tag(&key) {
            Some(TagResolution::One(lang)) => Ok(lang),
            Some(TagResolution::Several(candidates)) => Err(ambiguous(&candidates)),
            Some(TagResolution::NoSuchScript(candidates)) => {
                Err(unknown(candidates.iter().take(3).map(Lang::code).collect()))
            }
            None => Err(unknown(suggest(&key))),
        }
    }

    /// The FLORES-200 code, e.g. `fra_Latn`.
    pub fn code(&self) -> &'static str {
        LANGUAGES[self.0 as usize].0
    }

    /// The FLORES-200 English name, e.g. `French`.
    pub fn name(&self) -> &'static str {
        LANGUAGES[self.0 as usize].1
    }

    /// The ISO 639-3 part of the code, e.g. `fra`.
    pub fn iso639_3(&self) -> &'static str {
        &self.code()[..3]
    }

    /// The ISO 15924 script part of the code, e.g. `Latn`.
    pub fn script(&self) -> &'static str {
        &self.code()[4..]
    }

    pub fn direction(&self) -> TextDirection {
        if RIGHT_TO_LEFT_SCRIPTS.contains(&self.script()) {
            TextDirection::RightToLeft
        } else {
            TextDirection::LeftToRight
        }
    }

    pub fn is_rtl(&self) -> bool {
        self.direction() == TextDirection::RightToLeft
    }

    /// A BCP-47 tag for HTML's `lang` attribute (which picks fonts and shaping): the ISO 639-1 code where the
    /// language has one, else the ISO 639-3 code, then the script: `fr-Latn`, `hi-Deva`, `zh-Hant`, `ar-Arab`,
    /// `yue-Hant`, `ary-Arab`.
    pub fn bcp47(&self) -> String {
        let iso639_1 = ALIASES.iter().find(|(alias, code)| {
            alias.len() == 2 && !WITHDRAWN_ISO639_1.contains(alias) && &code[..3] == self.iso639_3()
        });
        let language = iso639_1.map_or(self.iso639_3(), |(alias, _)| *alias);
        format!("{language}-{}", self.script())
    }

    /// Position in transformers' `FAIRSEQ_LANGUAGE_CODES`, the order of NLLB's language tokens.
    pub fn fairseq_index(&self) -> usize {
        self.0 as usize
    }

    /// The 202 languages, in `FAIRSEQ_LANGUAGE_CODES` order.
    pub fn all() -> impl Iterator<Item = Lang> {
        (0..LANGUAGES.len()).map(|index| Lang(index as u8))
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Lang {
    type Err = LangError;

    fn from_str(input: &str) -> Result<Lang, LangError> {
        Lang::parse(input)
    }
}

impl serde::Serialize for Lang {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for Lang {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Lang, D::Error> {
        struct LangVisitor;

        impl serde::de::Visitor<'_> for LangVisitor {
            type Value = Lang;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a FLORES-200 language code such as fra_Latn")
            }

            fn visit_str<E: serde::de::Error>(self, input: &str) -> Result<Lang, E> {
                Lang::parse(input).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(LangVisitor)
    }
}

/// Parses a comma-separated list (`"fra_Latn,spa_Latn, hin_Deva"`): items are trimmed and parsed
/// with [`Lang::parse`], repeats are dropped keeping the first occurrence, empty items are errors.
pub fn parse_list(input: &str) -> Result<Vec<Lang>, LangError> {
    if input.trim().is_empty() {
        return Err(LangError::Empty);
    }
    let mut langs = Vec::new();
    for (position, item) in input.split(',').enumerate() {
        if item.trim().is_empty() {
            return Err(LangError::EmptyListItem { list: input.to_string(), position: position + 1 });
        }
        let lang = Lang::parse(item)?;
        if !langs.contains(&lang) {
            langs.push(lang);
        }
    }
    Ok(langs)
}

fn lang_by_code(code: &str) -> Option<Lang> {
    LANGUAGES.iter().position(|(known, _)| *known == code).map(|index| Lang(index as u8))
}

/// Lowercase, trimmed, inner whitespace collapsed to one space, `_` written `-`.
fn normalize(input: &str) -> String {
    input.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase().replace('_', "-")
}

/// What a normalised key names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    One(Lang),
    Several(Vec<Lang>),
}

/// Normalised codes, names and aliases -> languages.
fn index() -> &'static HashMap<String, Entry> {
    static INDEX: OnceLock<HashMap<String, Entry>> = OnceLock::new();
    INDEX.get_or_init(|| build_index().expect("language alias tables are consistent"))
}

fn build_index() -> Result<HashMap<String, Entry>, String> {
    let mut index = HashMap::new();
    for lang in Lang::all() {
        insert_key(&mut index, normalize(lang.code()), Entry::One(lang))?;
        insert_key(&mut index, normalize(lang.name()), Entry::One(lang))?;
    }
    for lang in Lang::all() {
        let siblings: Vec<Lang> = Lang::all().filter(|other| other.iso639_3() == lang.iso639_3()).collect();
        let is_listed = ALIASES.iter().any(|(alias, _)| *alias == lang.iso639_3());
        let entry = match siblings.as_slice() {
            [only] => Entry::One(*only),
            _ if is_listed => continue,
            _ => Entry::Several(siblings),
        };
        insert_key(&mut index, lang.iso639_3().to_string(), entry)?;
    }
    for (alias, code) in ALIASES {
        let lang = lang_by_code(code).ok_or_else(|| format!("alias `{alias}`: no code {code}"))?;
        insert_key(&mut index, checked_alias(alias)?, Entry::One(lang))?;
    }
    for (alias, codes) in AMBIGUOUS_ALIASES {
        let langs = codes
            .iter()
            .map(|code| lang_by_code(code).ok_or_else(|| format!("alias `{alias}`: no code {code}")))
            .collect::<Result<Vec<_>, _>>()?;
        insert_key(&mut index, checked_alias(alias)?, Entry::Several(langs))?;
    }
    Ok(index)
}

fn checked_alias(alias: &str) -> Result<String, String> {
    if normalize(alias) == alias {
        Ok(alias.to_string())
    } else {
        Err(format!("alias `{alias}` is not normalised"))
    }
}

/// Inserts, accepting a key twice only when it names the same languages both times.
fn insert_key(index: &mut HashMap<String, Entry>, key: String, entry: Entry) -> Result<(), String> {
    match index.get(&key) {
        Some(existing) if *existing != entry => Err(format!("`{key}` names both {existing:?} and {entry:?}")),
        Some(_) => Ok(()),
        None => {
            index.insert(key, entry);
            Ok(())
        }
    }
}

enum TagResolution {
    One(Lang),
    Several(Vec<Lang>),
    /// The language is known but not in the requested script; these are its scripts.
    NoSuchScript(Vec<Lang>),
}

/// Resolves a normalised `language[-script][-region]` tag; `None` if it is not one, or its
/// language subtag is unknown.
fn parse_language_tag(key: &str) -> Option<TagResolution> {
    let mut subtags = key.split('-');
    let language = subtags.next()?;
    let mut script = None;
    let mut region = None;
    for subtag in subtags {
        let is_alpha = subtag.chars().all(|c| c.is_ascii_alphabetic());
        let is_digit = subtag.chars().all(|c| c.is_ascii_digit());
        match subtag.len() {
            4 if is_alpha && script.is_none() && region.is_none() => script = Some(subtag),
            2 if is_alpha && region.is_none() => region = Some(subtag),
            3 if is_digit && region.is_none() => region = Some(subtag),
            _ => return None,
        }
    }
    let is_language_subtag = matches!(language.len(), 2 | 3) && language.chars().all(|c| c.is_ascii_alphabetic());
    if !is_language_subtag || (script.is_none() && region.is_none()) {
        return None;
    }
    let entry = index().get(language)?;
    if let Some(script) = script {
        let candidates = match entry {
            Entry::One(lang) => Lang::all().filter(|other| other.iso639_3() == lang.iso639_3()).collect(),
            Entry::Several(langs) => langs.clone(),
        };
        if let Some(lang) = candidates.iter().find(|lang| lang.script().eq_ignore_ascii_case(script)) {
            return Some(TagResolution::One(*lang));
        }
        if let Entry::One(lang) = entry {
            if let Some(lang) = subtag_override(*lang, script) {
                return Some(TagResolution::One(lang));
            }
        }
        return Some(TagResolution::NoSuchScript(candidates));
    }
    let region = region.expect("a tag without script has a region");
    Some(match entry {
        Entry::One(lang) => TagResolution::One(subtag_override(*lang, region).unwrap_or(*lang)),
        Entry::Several(langs) => TagResolution::Several(langs.clone()),
    })
}

fn subtag_override(lang: Lang, subtag: &str) -> Option<Lang> {
    SUBTAG_OVERRIDES
        .iter()
        .find(|(code, known, _)| *code == lang.code() && *known == subtag)
        .and_then(|(_, _, replacement)| lang_by_code(replacement))
}

/// Up to three codes whose code, name or alias is nearest to `key`, best first.
fn suggest(key: &str) -> Vec<&'static str> {
    let key: Vec<char> = key.chars().collect();
    let max_distance = match key.len() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    // Per language: (distance, longest shared prefix negated, FAIRSEQ order) of its best key.
    let mut best: HashMap<Lang, (usize, isize, usize)> = HashMap::new();
    for (candidate, entry) in index() {
        let candidate: Vec<char> = candidate.chars().collect();
        let distance = edit_distance(&key, &candidate);
        if distance > max_distance {
            continue;
        }
        let shared_prefix = key.iter().zip(&candidate).take_while(|(a, b)| a == b).count();
        let langs = match entry {
            Entry::One(lang) => std::slice::from_ref(lang),
            Entry::Several(langs) => langs.as_slice(),
        };
        for lang in langs {
            let rank = (distance, -(shared_prefix as isize), lang.fairseq_index());
            best.entry(*lang).and_modify(|current| *current = (*current).min(rank)).or_insert(rank);
        }
    }
    let mut ranked: Vec<(Lang, (usize, isize, usize))> = best.into_iter().collect();
    ranked.sort_by_key(|(_, rank)| *rank);
    ranked.into_iter().take(3).map(|(lang, _)| lang.code()).collect()
}

/// Optimal string alignment distance: Levenshtein plus transposition of adjacent characters. Used for the
/// "did you mean" suggestions of language codes and task names.
pub fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut distance = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                distance = distance.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = distance;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers 4.46.3, `models/nllb/tokenization_nllb.py`, `FAIRSEQ_LANGUAGE_CODES`.
    const FAIRSEQ_LANGUAGE_CODES: &str = "\
         ace_Arab ace_Latn acm_Arab acq_Arab aeb_Arab afr_Latn ajp_Arab aka_Latn amh_Ethi apc_Arab \
         arb_Arab ars_Arab ary_Arab arz_Arab asm_Beng ast_Latn awa_Deva ayr_Latn azb_Arab azj_Latn \
         bak_Cyrl bam_Latn ban_Latn bel_Cyrl bem_Latn ben_Beng bho_Deva bjn_Arab bjn_Latn bod_Tibt \
         bos_Latn bug_Latn bul_Cyrl cat_Latn ceb_Latn ces_Latn cjk_Latn ckb_Arab crh_Latn cym_Latn \
         dan_Latn deu_Latn dik_Latn dyu_Latn dzo_Tibt ell_Grek eng_Latn epo_Latn est_Latn eus_Latn \
         ewe_Latn fao_Latn pes_Arab fij_Latn fin_Latn fon_Latn fra_Latn fur_Latn fuv_Latn gla_Latn \
         gle_Latn glg_Latn grn_Latn guj_Gujr hat_Latn hau_Latn heb_Hebr hin_Deva hne_Deva hrv_Latn \
         hun_Latn hye_Armn ibo_Latn ilo_Latn ind_Latn isl_Latn ita_Latn jav_Latn jpn_Jpan kab_Latn \
         kac_Latn kam_Latn kan_Knda kas_Arab kas_Deva kat_Geor knc_Arab knc_Latn kaz_Cyrl kbp_Latn \
         kea_Latn khm_Khmr kik_Latn kin_Latn kir_Cyrl kmb_Latn kon_Latn kor_Hang kmr_Latn lao_Laoo \
         lvs_Latn lij_Latn lim_Latn lin_Latn lit_Latn lmo_Latn ltg_Latn ltz_Latn lua_Latn lug_Latn \
         luo_Latn lus_Latn mag_Deva mai_Deva mal_Mlym mar_Deva min_Latn mkd_Cyrl plt_Latn mlt_Latn \
         mni_Beng khk_Cyrl mos_Latn mri_Latn zsm_Latn mya_Mymr nld_Latn nno_Latn nob_Latn npi_Deva \
         nso_Latn nus_Latn nya_Latn oci_Latn gaz_Latn ory_Orya pag_Latn pan_Guru pap_Latn pol_Latn \
         por_Latn prs_Arab pbt_Arab quy_Latn ron_Latn run_Latn rus_Cyrl sag_Latn san_Deva sat_Beng \
         scn_Latn shn_Mymr sin_Sinh slk_Latn slv_Latn smo_Latn sna_Latn snd_Arab som_Latn sot_Latn \
         spa_Latn als_Latn srd_Latn srp_Cyrl ssw_Latn sun_Latn swe_Latn swh_Latn szl_Latn tam_Taml \
         tat_Cyrl tel_Telu tgk_Cyrl tgl_Latn tha_Thai tir_Ethi taq_Latn taq_Tfng tpi_Latn tsn_Latn \
         tso_Latn tuk_Latn tum_Latn tur_Latn twi_Latn tzm_Tfng uig_Arab ukr_Cyrl umb_Latn urd_Arab \
         uzn_Latn vec_Latn vie_Latn war_Latn wol_Latn xho_Latn ydd_Hebr yor_Latn yue_Hant zho_Hans \
         zho_Hant zul_Latn";

    fn lang(code: &str) -> Lang {
        Lang::parse(code).unwrap_or_else(|error| panic!("{code}: {error}"))
    }

    fn codes(langs: &[Lang]) -> Vec<&'static str> {
        langs.iter().map(Lang::code).collect()
    }

    #[test]
    fn all_has_the_202_fairseq_codes_in_order() {
        let expected: Vec<&str> = FAIRSEQ_LANGUAGE_CODES.split_whitespace().collect();
        assert_eq!(expected.len(), 202);
        let actual: Vec<&str> = Lang::all().map(|lang| lang.code()).collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for lang in Lang::all() {
            assert!(seen.insert(lang.code()), "duplicate {}", lang.code());
            let (iso, script) = lang.code().split_once('_').expect("code has `_`");
            assert_eq!(iso.len(), 3, "{}", lang.code());
            assert!(iso.chars().all(|c| c.is_ascii_lowercase()));
            assert_eq!(script.len(), 4, "{}", lang.code());
            assert!(script.starts_with(|c: char| c.is_ascii_uppercase()));
            assert_eq!(lang.iso639_3(), iso);
            assert_eq!(lang.script(), script);
        }
        assert_eq!(seen.len(), 202);
    }

    #[test]
    fn names_are_unique_and_non_empty() {
        let mut seen = std::collections::HashSet::new();
        for lang in Lang::all() {
            assert!(!lang.name().is_empty());
            assert!(seen.insert(lang.name()), "duplicate name {}", lang.name());
        }
    }

    #[test]
    fn flores_names_of_common_languages() {
        assert_eq!(lang("fra_Latn").name(), "French");
        assert_eq!(lang("arb_Arab").name(), "Modern Standard Arabic");
        assert_eq!(lang("zho_Hans").name(), "Chinese (Simplified)");
        assert_eq!(lang("zho_Hant").name(), "Chinese (Traditional)");
        assert_eq!(lang("hin_Deva").name(), "Hindi");
        assert_eq!(lang("pes_Arab").name(), "Western Persian");
    }

    #[test]
    fn fairseq_index_matches_nllb_token_order() {
        // NLLB's tokenizer gives eng_Latn id 256047 and fra_Latn 256057: 256001 + index.
        assert_eq!(lang("eng_Latn").fairseq_index(), 46);
        assert_eq!(lang("fra_Latn").fairseq_index(), 56);
        assert_eq!(lang("ace_Arab").fairseq_index(), 0);
        assert_eq!(lang("zul_Latn").fairseq_index(), 201);
    }

    #[test]
    fn html_lang_tags_use_the_two_letter_code_where_there_is_one_and_the_script() {
        assert_eq!(lang("fra_Latn").bcp47(), "fr-Latn");
        assert_eq!(lang("hin_Deva").bcp47(), "hi-Deva");
        assert_eq!(lang("zho_Hans").bcp47(), "zh-Hans");
        assert_eq!(lang("zho_Hant").bcp47(), "zh-Hant");
        assert_eq!(lang("arb_Arab").bcp47(), "ar-Arab");
        assert_eq!(lang("heb_Hebr").bcp47(), "he-Hebr");
        assert_eq!(lang("ind_Latn").bcp47(), "id-Latn");
        assert_eq!(lang("nob_Latn").bcp47(), "nb-Latn");
        assert_eq!(lang("yue_Hant").bcp47(), "yue-Hant");
        assert_eq!(lang("ary_Arab").bcp47(), "ary-Arab");
        for lang in Lang::all() {
            let tag = lang.bcp47();
            assert!(tag.ends_with(&format!("-{}", lang.script())) && tag.len() <= 8, "{tag}");
        }
    }

    #[test]
    fn every_code_parses_back_to_itself() {
        for lang in Lang::all() {
            assert_eq!(Lang::parse(lang.code()), Ok(lang));
            assert_eq!(lang.code().parse::<Lang>(), Ok(lang));
            assert_eq!(lang.to_string(), lang.code());
        }
    }

    #[test]
    fn every_flores_name_parses_to_its_code() {
        for lang in Lang::all() {
            assert_eq!(Lang::parse(lang.name()), Ok(lang), "{}", lang.name());
        }
    }

    #[test]
    fn codes_parse_case_insensitively_with_hyphen_or_spaces() {
        assert_eq!(lang("FRA_LATN"), lang("fra_Latn"));
        assert_eq!(lang("fra-latn"), lang("fra_Latn"));
        assert_eq!(lang("  Zho-Hant \n"), lang("zho_Hant"));
        assert_eq!(lang("FRENCH"), lang("fra_Latn"));
        assert_eq!(lang("Traditional   Chinese"), lang("zho_Hant"));
    }

    #[test]
    fn alias_fr_resolves_to_fra_latn() {
        assert_eq!(lang("fr").code(), "fra_Latn");
        assert_eq!(lang("FR").code(), "fra_Latn");
        assert_eq!(lang("fra").code(), "fra_Latn");
        assert_eq!(lang("fre").code(), "fra_Latn");
        assert_eq!(lang("french").code(), "fra_Latn");
    }

    #[test]
    fn iso_639_1_aliases_of_common_languages() {
        let expected = [
            ("es", "spa_Latn"),
            ("de", "deu_Latn"),
            ("it", "ita_Latn"),
            ("pt", "por_Latn"),
            ("nl", "nld_Latn"),
            ("ru", "rus_Cyrl"),
            ("uk", "ukr_Cyrl"),
            ("pl", "pol_Latn"),
            ("cs", "ces_Latn"),
            ("tr", "tur_Latn"),
            ("ar", "arb_Arab"),
            ("he", "heb_Hebr"),
            ("fa", "pes_Arab"),
            ("hi", "hin_Deva"),
            ("bn", "ben_Beng"),
            ("ur", "urd_Arab"),
            ("ta", "tam_Taml"),
            ("te", "tel_Telu"),
            ("ja", "jpn_Jpan"),
            ("ko", "kor_Hang"),
            ("zh", "zho_Hans"),
            ("vi", "vie_Latn"),
            ("th", "tha_Thai"),
            ("id", "ind_Latn"),
            ("ms", "zsm_Latn"),
            ("sw", "swh_Latn"),
            ("el", "ell_Grek"),
            ("sv", "swe_Latn"),
            ("da", "dan_Latn"),
            ("no", "nob_Latn"),
            ("nb", "nob_Latn"),
            ("nn", "nno_Latn"),
            ("fi", "fin_Latn"),
            ("hu", "hun_Latn"),
            ("ro", "ron_Latn"),
            ("bg", "bul_Cyrl"),
            ("sr", "srp_Cyrl"),
            ("hr", "hrv_Latn"),
            ("sq", "als_Latn"),
            ("lv", "lvs_Latn"),
            ("iw", "heb_Hebr"),
        ];
        for (alias, code) in expected {
            assert_eq!(lang(alias).code(), code, "{alias}");
        }
    }

    #[test]
    fn english_names_resolve_to_standard_varieties() {
        let expected = [
            ("spanish", "spa_Latn"),
            ("German", "deu_Latn"),
            ("chinese", "zho_Hans"),
            ("mandarin", "zho_Hans"),
            ("traditional chinese", "zho_Hant"),
            ("cantonese", "yue_Hant"),
            ("arabic", "arb_Arab"),
            ("portuguese", "por_Latn"),
            ("norwegian", "nob_Latn"),
            ("persian", "pes_Arab"),
            ("farsi", "pes_Arab"),
            ("dari", "prs_Arab"),
            ("malay", "zsm_Latn"),
            ("swahili", "swh_Latn"),
            ("hindi", "hin_Deva"),
            ("albanian", "als_Latn"),
            ("punjabi", "pan_Guru"),
            ("norwegian bokmål", "nob_Latn"),
        ];
        for (alias, code) in expected {
            assert_eq!(lang(alias).code(), code, "{alias}");
        }
    }

    #[test]
    fn iso_639_3_and_macrolanguage_codes_resolve() {
        assert_eq!(lang("deu").code(), "deu_Latn");
        assert_eq!(lang("ger").code(), "deu_Latn");
        assert_eq!(lang("ara").code(), "arb_Arab");
        assert_eq!(lang("arb").code(), "arb_Arab");
        assert_eq!(lang("fas").code(), "pes_Arab");
        assert_eq!(lang("msa").code(), "zsm_Latn");
        assert_eq!(lang("zho").code(), "zho_Hans");
        assert_eq!(lang("cmn").code(), "zho_Hans");
        assert_eq!(lang("yue").code(), "yue_Hant");
    }

    #[test]
    fn every_iso_part_resolves_to_one_of_its_codes() {
        for lang in Lang::all() {
            match Lang::parse(lang.iso639_3()) {
                Ok(parsed) => assert_eq!(parsed.iso639_3(), lang.iso639_3()),
                Err(LangError::Ambiguous { candidates, .. }) => {
                    assert!(candidates.contains(&lang.code()), "{}", lang.code())
                }
                Err(error) => panic!("{}: {error}", lang.iso639_3()),
            }
        }
    }

    #[test]
    fn bcp47_tags_drop_regions_that_do_not_change_the_code() {
        assert_eq!(lang("en-US").code(), "eng_Latn");
        assert_eq!(lang("en_GB").code(), "eng_Latn");
        assert_eq!(lang("fr-FR").code(), "fra_Latn");
        assert_eq!(lang("pt-BR").code(), "por_Latn");
        assert_eq!(lang("pt-PT").code(), "por_Latn");
        assert_eq!(lang("es-419").code(), "spa_Latn");
        assert_eq!(lang("zh-CN").code(), "zho_Hans");
        assert_eq!(lang("ar-EG").code(), "arb_Arab");
    }

    #[test]
    fn zh_tw_resolves_to_traditional_chinese() {
        assert_eq!(lang("zh-TW").code(), "zho_Hant");
        assert_eq!(lang("zh_tw").code(), "zho_Hant");
        assert_eq!(lang("zh-HK").code(), "zho_Hant");
        assert_eq!(lang("zh-Hant").code(), "zho_Hant");
        assert_eq!(lang("zh-Hans-TW").code(), "zho_Hans");
        assert_eq!(lang("zh-Hant-CN").code(), "zho_Hant");
    }

    #[test]
    fn bcp47_regions_and_scripts_that_change_the_code() {
        assert_eq!(lang("fa-AF").code(), "prs_Arab");
        assert_eq!(lang("az-IR").code(), "azb_Arab");
        assert_eq!(lang("az-Arab").code(), "azb_Arab");
        assert_eq!(lang("az-Latn").code(), "azj_Latn");
        assert_eq!(lang("ku-Arab").code(), "ckb_Arab");
        assert_eq!(lang("ks-Deva").code(), "kas_Deva");
        assert_eq!(lang("sr-Cyrl-RS").code(), "srp_Cyrl");
    }

    #[test]
    fn script_nllb_lacks_is_unknown_and_suggests_the_available_one() {
        let error = Lang::parse("sr-Latn").unwrap_err();
        assert_eq!(error, LangError::Unknown { input: "sr-Latn".into(), suggestions: vec!["srp_Cyrl"] });
        let error = Lang::parse("fra_Cyrl").unwrap_err();
        assert!(matches!(&error, LangError::Unknown { suggestions, .. } if suggestions == &["fra_Latn"]));
    }

    #[test]
    fn languages_in_two_scripts_are_ambiguous_without_a_script() {
        for (input, expected) in [
            ("kurdish", ["kmr_Latn", "ckb_Arab"]),
            ("ku", ["kmr_Latn", "ckb_Arab"]),
            ("ks", ["kas_Arab", "kas_Deva"]),
            ("kas", ["kas_Arab", "kas_Deva"]),
            ("ace", ["ace_Arab", "ace_Latn"]),
            ("taq", ["taq_Latn", "taq_Tfng"]),
            ("ku-IQ", ["kmr_Latn", "ckb_Arab"]),
        ] {
            assert_eq!(
                Lang::parse(input),
                Err(LangError::Ambiguous { input: input.into(), candidates: expected.to_vec() })
            );
        }
    }

    #[test]
    fn ambiguous_message_names_the_candidates() {
        let message = Lang::parse("Kurdish").unwrap_err().to_string();
        assert_eq!(
            message,
            "language `Kurdish` is ambiguous: it may be kmr_Latn (Northern Kurdish) or \
             ckb_Arab (Central Kurdish); use one of these codes"
        );
    }

    #[test]
    fn misspelt_code_suggests_the_nearest() {
        let LangError::Unknown { suggestions, .. } = Lang::parse("fra_Latm").unwrap_err() else {
            panic!("expected Unknown");
        };
        assert_eq!(suggestions.first(), Some(&"fra_Latn"));
    }

    #[test]
    fn misspelt_name_suggests_the_nearest() {
        for (input, expected) in [
            ("frnch", "fra_Latn"),
            ("spn", "spa_Latn"),
            ("portugese", "por_Latn"),
            ("germna", "deu_Latn"),
            ("chineese", "zho_Hans"),
            ("arb_Latn", "arb_Arab"),
        ] {
            let Err(LangError::Unknown { suggestions, .. }) = Lang::parse(input) else {
                panic!("{input} should be unknown");
            };
            assert_eq!(suggestions.first(), Some(&expected), "{input}: {suggestions:?}");
            assert!(suggestions.len() <= 3);
        }
    }

    #[test]
    fn unknown_message_lists_suggestions_with_names() {
        let message = Lang::parse("frnch").unwrap_err().to_string();
        assert!(message.starts_with("unknown language `frnch`; did you mean fra_Latn (French)"), "{message}");
        assert!(message.contains("eng_Latn"), "{message}");
    }

    #[test]
    fn far_off_input_is_unknown_without_suggestions() {
        let error = Lang::parse("klingon-warrior-dialect").unwrap_err();
        assert_eq!(error, LangError::Unknown { input: "klingon-warrior-dialect".into(), suggestions: vec![] });
        assert!(error.to_string().contains("use a FLORES-200 code such as eng_Latn"));
    }

    #[test]
    fn empty_input_is_an_error() {
        assert_eq!(Lang::parse(""), Err(LangError::Empty));
        assert_eq!(Lang::parse("   \t"), Err(LangError::Empty));
        assert!(LangError::Empty.to_string().contains("fra_Latn"));
    }

    #[test]
    fn right_to_left_scripts() {
        for code in ["arb_Arab", "heb_Hebr", "urd_Arab", "pes_Arab", "ydd_Hebr", "pbt_Arab"] {
            assert!(lang(code).is_rtl(), "{code}");
            assert_eq!(lang(code).direction(), TextDirection::RightToLeft);
        }
        for code in ["fra_Latn", "eng_Latn", "zho_Hans", "hin_Deva", "taq_Tfng", "kas_Deva"] {
            assert!(!lang(code).is_rtl(), "{code}");
        }
        let rtl: Vec<&str> = Lang::all().filter(Lang::is_rtl).map(|l| l.code()).collect();
        assert_eq!(rtl.len(), 23, "{rtl:?}");
        assert!(rtl.iter().all(|code| code.ends_with("_Arab") || code.ends_with("_Hebr")));
    }

    #[test]
    fn serde_round_trips_as_the_code() {
        let langs = vec![lang("fra_Latn"), lang("zho_Hant"), lang("arb_Arab")];
        let json = serde_json::to_string(&langs).unwrap();
        assert_eq!(json, r#"["fra_Latn","zho_Hant","arb_Arab"]"#);
        let back: Vec<Lang> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, langs);
    }

    #[test]
    fn serde_accepts_aliases_in_json() {
        let parsed: Vec<Lang> = serde_json::from_str(r#"["fr", "zh-TW", "Hindi"]"#).unwrap();
        assert_eq!(codes(&parsed), ["fra_Latn", "zho_Hant", "hin_Deva"]);
    }

    #[test]
    fn serde_error_carries_the_lang_error_message() {
        let error = serde_json::from_str::<Lang>(r#""frnch""#).unwrap_err();
        assert!(error.to_string().contains("unknown language `frnch`; did you mean fra_Latn"), "{error}");
        assert!(serde_json::from_str::<Lang>("42").is_err());
    }

    #[test]
    fn parse_list_trims_and_keeps_order() {
        let langs = parse_list("fra_Latn,spa_Latn, hin_Deva").unwrap();
        assert_eq!(codes(&langs), ["fra_Latn", "spa_Latn", "hin_Deva"]);
    }

    #[test]
    fn parse_list_drops_repeats_keeping_the_first() {
        let langs = parse_list("fr, spa_Latn ,fra_Latn,French,es").unwrap();
        assert_eq!(codes(&langs), ["fra_Latn", "spa_Latn"]);
    }

    #[test]
    fn parse_list_rejects_empty_items() {
        assert_eq!(
            parse_list("fra_Latn,,spa_Latn"),
            Err(LangError::EmptyListItem { list: "fra_Latn,,spa_Latn".into(), position: 2 })
        );
        assert!(matches!(parse_list("fra_Latn, "), Err(LangError::EmptyListItem { position: 2, .. })));
        assert_eq!(parse_list("  "), Err(LangError::Empty));
    }

    #[test]
    fn parse_list_reports_the_unknown_item() {
        let Err(LangError::Unknown { input, .. }) = parse_list("fra_Latn, xx_Yyyy") else {
            panic!("expected Unknown");
        };
        assert_eq!(input, "xx_Yyyy");
    }

    #[test]
    fn alias_tables_are_consistent() {
        let index = build_index().unwrap();
        let mut seen = std::collections::HashSet::new();
        for alias in ALIASES.iter().map(|(alias, _)| *alias).chain(AMBIGUOUS_ALIASES.iter().map(|(alias, _)| *alias)) {
            assert!(seen.insert(alias), "alias `{alias}` listed twice");
        }
        for (code, subtag, replacement) in SUBTAG_OVERRIDES {
            assert!(lang_by_code(code).is_some() && lang_by_code(replacement).is_some());
            assert_eq!(normalize(subtag), *subtag);
        }
        assert!(index.len() > 202 * 2);
    }

    #[test]
    fn edit_distance_counts_transpositions_as_one() {
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        assert_eq!(edit_distance(&chars("germna"), &chars("german")), 1);
        assert_eq!(edit_distance(&chars("frnch"), &chars("french")), 1);
        assert_eq!(edit_distance(&chars(""), &chars("abc")), 3);
        assert_eq!(edit_distance(&chars("kitten"), &chars("sitting")), 3);
    }
}
