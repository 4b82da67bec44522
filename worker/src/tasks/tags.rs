//! Reads a model's answer to a tag task, whatever its layout, into clean tags in order of prominence plus an
//! alphabetical copy; also how a tag list goes through the translator and comes back.
//!
//! # What is accepted
//!
//! The prompt asks for one comma-separated line, but models also answer with numbered or bulleted lists,
//! hashtags, quoted items, bold items with explanations, or a preamble. [`parse_tags`] reads, in order:
//!
//! 1. **Lines.** Blank lines, markdown headings (`## Tags`) and lines ending with `:` (a preamble such as
//!    `Here are 15 tags:` or a group heading such as `**Objects:**`) are dropped. List markers are removed:
//!    bullets `-` `*` `+` `•` `·` `–` `—` and numbers `1.` `1)` `(1)`. So are markdown `**`, `__` and backticks.
//! 2. **Labels and explanations.** In `head: tail` (a colon then a space), the head is a label and dropped
//!    (`Tags: sunset, beach`, `Mood: calm`), unless the tail reads as an explanation, in which case the head
//!    is the tag (`1. **Sunset**: the sky glows ...` -> `Sunset`). A tail is an explanation when its first
//!    item is longer than the word limit, or when it runs past the limit and opens like a sentence (`the`,
//!    `a`, `it`, `represents`, ...). `head - tail` with a spaced dash (`-`, `–`, `—`) keeps the head when
//!    the tail runs past the limit; spaced dashes between short items separate them (`sunset - beach`).
//! 3. **Prose lines.** Where the answer has several lines, a line whose first item is longer than the word
//!    limit is a sentence (an introduction or a closing remark) and is dropped whole, so that its clauses do
//!    not turn into tags.
//! 4. **Items.** Lines split on `,` `;` `|` `•`, a spaced `·`, the CJK and Arabic commas `，` `、` `；` `،`
//!    (translations), and before each hashtag. Each item loses surrounding quotes (straight, curly, `«»`),
//!    single `*`/`_` emphasis, a leading `#` (a hashtag's `_` become spaces: `#golden_hour` ->
//!    `golden hour`), a trailing parenthetical (`Coca-Cola (brand)`), and trailing `.` `!` `?` `…` `:` `;`
//!    (a `.` stays where the item has another one: `Washington D.C.`). Whitespace runs become one space.
//! 5. **Filters.** Dropped: items without a letter (`42`, `---`), chat filler (`Sure!`, `Here are ...`,
//!    `I hope this helps`), and items of more than [`MAX_TAG_WORDS`] words or [`MAX_TAG_CHARS`] characters:
//!    those are sentences, not tags, and truncating one would make up a tag the model did not write.
//!
//! # Casing
//!
//! Tags are lower-cased, except those that look like proper nouns, brands or acronyms, which keep the casing
//! the model wrote. What "looks like" depends on how the model cased the list as a whole:
//!
//! - **Lower-case list** (most items start with a lower-case letter, as the prompt asks): a capital is
//!   deliberate, so any item with an upper-case letter is kept as written (`sunset, Paris, beach`).
//! - **Title-case list** (at least two items of several words, each with every word capitalised except
//!   `and`, `of`, `the`, ...): capitals say nothing, so only an acronym (a word whose two or more letters and
//!   digits include no lower-case letter: `NASA`, `4K`, `U.S.`) or an inner capital after a lower-case letter
//!   (`iPhone`, `McDonald's`, `YouTube`) keeps an item's casing.
//! - **Otherwise** (sentence case: `Sunset, Golden hour, New York`): the first letter of an item says nothing,
//!   but an acronym, an inner capital (also after `-` or `'`: `Coca-Cola`, `O'Brien`) or a capitalised word
//!   after the first (`New York`, `Eiffel Tower`) keeps the item as written.
//!
//! So a single-word proper noun in a capitalised list (`Sunset, Paris`) is lower-cased: without a dictionary
//! it cannot be told from a capitalised common noun.
//!
//! Items are deduplicated case-insensitively after casing, keeping the first. [`Tags::tags_processed`] is the
//! same set sorted case-insensitively (by Unicode code point of the lower-cased tag; no locale collation).
//!
//! # Translation
//!
//! Each tag is translated on its own (a short NLLB segment), so the translated list stays aligned with the
//! English one, tag for tag; the pipeline does this (worker/src/pipeline.rs).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// The most words an English tag may have.
pub const MAX_TAG_WORDS: usize = 4;
/// The most characters a tag may have.
pub const MAX_TAG_CHARS: usize = 64;

/// Parsed tags, as stored in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tags {
    /// In order of appearance, which the prompt asks to be the order of prominence.
    pub tags: Vec<String>,
    /// The same tags sorted case-insensitively.
    pub tags_processed: Vec<String>,
}

impl Tags {
    /// Tags in prominence order, with their sorted copy.
    pub fn from_tags(tags: Vec<String>) -> Tags {
        let mut tags_processed = tags.clone();
        tags_processed.sort_by_cached_key(|tag| (tag.to_lowercase(), tag.clone()));
        Tags { tags, tags_processed }
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

/// Reads a model's tag-list answer (see the module docs for the rules).
pub fn parse_tags(text: &str) -> Tags {
    parse_with(text, MAX_TAG_WORDS)
}

fn parse_with(text: &str, max_words: usize) -> Tags {
    let text = text.replace('\r', "\n");
    let lines: Vec<String> =
        text.lines().filter_map(clean_line).filter_map(|line| resolve_label(&line, max_words)).collect();
    let several_lines = lines.len() > 1;
    let mut items = Vec::new();
    for line in &lines {
        if several_lines && is_prose(line, max_words) {
            continue;
        }
        items.extend(split_items(line).iter().filter_map(|item| clean_item(item, max_words)));
    }
    let style = ListStyle::of(&items);
    let mut seen = HashSet::new();
    let mut tags = Vec::new();
    for item in items {
        let tag = if style.keeps_case(&item) { item } else { item.to_lowercase() };
        if seen.insert(tag.to_lowercase()) {
            tags.push(tag);
        }
    }
    Tags::from_tags(tags)
}

/// Step 1: a line without its list marker and markdown, or `None` for a line that holds no tags.
fn clean_line(line: &str) -> Option<String> {
    let line = line.trim();
    let hashes = line.chars().take_while(|&c| c == '#').count();
    if hashes > 0 && line[hashes..].starts_with(char::is_whitespace) {
        return None; // a markdown heading; `#sunset` is a hashtag
    }
    let line = strip_list_markers(line).replace("**", "").replace("__", "").replace('`', "");
    let line = line.trim();
    if line.is_empty() || line.ends_with(':') || line.ends_with('：') {
        return None;
    }
    Some(line.to_string())
}

/// Removes leading bullets and numbers: `- `, `* `, `•`, `1.`, `2)`, `(3)`, also nested (`- 1. x`).
fn strip_list_markers(mut text: &str) -> &str {
    loop {
        let stripped = strip_list_marker(text).trim_start();
        if stripped.len() == text.len() {
            return text;
        }
        text = stripped;
    }
}

fn strip_list_marker(text: &str) -> &str {
    let mut chars = text.chars();
    let Some(first) = chars.next() else { return text };
    let rest = chars.as_str();
    match first {
        '•' | '·' | '‣' | '◦' | '▪' | '►' => return rest,
        '-' | '*' | '+' | '–' | '—' if rest.starts_with(char::is_whitespace) => return rest,
        '(' => {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            if digits > 0 && rest[digits..].starts_with(')') {
                return &rest[digits + 1..];
            }
        }
        '0'..='9' => {
            let digits = text.chars().take_while(char::is_ascii_digit).count();
            let after = &text[digits..];
            if let Some(rest) = after.strip_prefix('.').or_else(|| after.strip_prefix(')')) {
                if !rest.starts_with(|c: char| c.is_ascii_digit()) {
                    return rest; // `1. x` and `1)x`, not `3.5mm`
                }
            }
        }
        _ => {}
    }
    text
}

/// Step 2: the part of `head: tail` (or `head - tail` before an explanation) that holds tags.
fn resolve_label(line: &str, max_words: usize) -> Option<String> {
    if let Some((head, tail)) = split_colon(line) {
        if !has_separator(head) {
            if tail.is_empty() {
                return None;
            }
            if !is_explanation(tail, max_words, false) {
                return Some(tail.to_string()); // a label: `Tags: a, b`, `Mood: calm`
            }
            // A tag and its explanation, or a sentence with a colon (left to the length filter).
            return Some(if is_tag_length(head, max_words) { head } else { line }.to_string());
        }
    }
    for dash in SPACED_DASHES {
        if let Some((head, tail)) = line.split_once(dash) {
            if !has_separator(head) && is_tag_length(head, max_words) && is_explanation(tail, max_words, true) {
                return Some(head.trim().to_string());
            }
        }
    }
    if !has_separator(line) && SPACED_DASHES.iter().any(|dash| line.contains(dash)) {
        // `sunset - beach - ocean`: spaced dashes between short items separate them.
        let list = SPACED_DASHES.iter().fold(line.to_string(), |list, dash| list.replace(dash, ", "));
        if list.split(", ").all(|item| is_tag_length(item, max_words)) {
            return Some(list);
        }
    }
    Some(line.to_string())
}

const SPACED_DASHES: [&str; 3] = [" - ", " – ", " — "];

/// Words that open a sentence rather than a list of tags.
const SENTENCE_OPENERS: &[&str] = &[
    "a",
    "an",
    "the",
    "this",
    "that",
    "these",
    "those",
    "it",
    "its",
    "it's",
    "they",
    "their",
    "there",
    "which",
    "represents",
    "refers",
    "shows",
    "depicts",
    "describes",
    "suggests",
    "evokes",
    "captures",
    "conveys",
    "highlights",
    "indicates",
    "adds",
];

/// Whether the text after `head:` (or `head -`) explains the head rather than listing tags: its first item is
/// longer than a tag, or it runs past the word limit and opens like a sentence (`the main subject, leaning
/// against the wall`); after a spaced dash, any tail past the word limit.
fn is_explanation(tail: &str, max_words: usize, after_dash: bool) -> bool {
    let opens_sentence = || {
        let first = tail.split_whitespace().next().unwrap_or("").to_lowercase();
        SENTENCE_OPENERS.contains(&first.as_str())
    };
    is_prose(tail, max_words) || (tail.split_whitespace().count() > max_words && (after_dash || opens_sentence()))
}

fn is_tag_length(text: &str, max_words: usize) -> bool {
    (1..=max_words).contains(&text.split_whitespace().count())
}

/// `head: tail` at the first colon followed by whitespace (not `10:30` or `http://`), or a full-width colon.
fn split_colon(text: &str) -> Option<(&str, &str)> {
    let mut position = 0;
    while let Some(offset) = text[position..].find([':', '：']) {
        let index = position + offset;
        let colon = text[index..].chars().next().map_or(1, char::len_utf8);
        let rest = &text[index + colon..];
        if colon > 1 || rest.is_empty() || rest.starts_with(char::is_whitespace) {
            return Some((text[..index].trim(), rest.trim()));
        }
        position = index + colon;
    }
    None
}

/// Step 3: text whose first item has more words than a tag may.
fn is_prose(text: &str, max_words: usize) -> bool {
    split_items(text).first().is_some_and(|item| item.split_whitespace().count() > max_words)
}

fn is_separator(c: char) -> bool {
    matches!(c, ',' | ';' | '|' | '•' | '，' | '、' | '；' | '،')
}

fn has_separator(text: &str) -> bool {
    text.contains(is_separator)
}

/// Step 4: a line split into items at separators, spaced middle dots and hashtags.
fn split_items(line: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = line.chars().peekable();
    let mut previous = ' ';
    while let Some(c) = chars.next() {
        let next = chars.peek().copied().unwrap_or(' ');
        let spaced_dot = c == '·' && previous.is_whitespace() && next.is_whitespace();
        let hashtag = c == '#' && previous.is_whitespace() && !next.is_whitespace() && next != '#';
        if is_separator(c) || spaced_dot || (hashtag && !current.trim().is_empty()) {
            items.push(std::mem::take(&mut current));
        }
        if !is_separator(c) && !spaced_dot {
            current.push(c);
        }
        previous = c;
    }
    items.push(current);
    items.into_iter().map(|item| item.trim().to_string()).filter(|item| !item.is_empty()).collect()
}

/// Step 4 and 5: one item cleaned, or `None` where it is not a tag.
fn clean_item(item: &str, max_words: usize) -> Option<String> {
    let mut item = strip_decorations(item).to_string();
    if let Some(hashtag) = item.strip_prefix('#') {
        item = hashtag.trim_start_matches('#').replace('_', " ");
    }
    if let Some((head, tail)) = split_colon(&item) {
        item = if !tail.is_empty() && !is_prose(tail, max_words) { tail } else { head }.to_string();
    }
    if let Some(open) = item.rfind('(') {
        if open > 0 && item.ends_with(')') {
            item.truncate(open);
        }
    }
    let item = strip_decorations(&item).split_whitespace().collect::<Vec<_>>().join(" ");
    let words = item.split_whitespace().count();
    let is_tag = item.chars().any(char::is_alphabetic)
        && (1..=max_words).contains(&words)
        && item.chars().count() <= MAX_TAG_CHARS
        && !is_filler(&item);
    is_tag.then_some(item)
}

/// Removes list markers, quotes, emphasis and trailing punctuation from both ends, repeatedly.
fn strip_decorations(mut text: &str) -> &str {
    loop {
        let before = text.len();
        text = strip_list_markers(text.trim());
        text = text.trim_start_matches(['"', '“', '”', '„', '«', '*', '_']);
        text = text.trim_end_matches(['"', '“', '”', '»', '*', '_', '!', '?', '…', ':', ';']);
        let mut chars = text.chars();
        if let (Some(first), Some(last)) = (chars.next(), chars.next_back()) {
            if matches!(first, '\'' | '‘' | '’') && matches!(last, '\'' | '’' | '‘') {
                text = &text[first.len_utf8()..text.len() - last.len_utf8()];
            }
        }
        if let Some(rest) = text.strip_suffix('.') {
            if !rest.contains('.') {
                text = rest; // `sunset.`, but not `D.C.`
            }
        }
        text = text.trim();
        if text.len() == before {
            return text;
        }
    }
}

/// Openings of chat around the list: `Sure!`, `Here are the tags`, `I hope this helps`.
const FILLERS: &[&str] = &[
    "sure",
    "certainly",
    "of course",
    "okay",
    "here are",
    "here is",
    "here's",
    "i hope",
    "hope this",
    "let me know",
    "feel free",
    "these tags",
];

fn is_filler(item: &str) -> bool {
    let lower = item.to_lowercase();
    FILLERS
        .iter()
        .any(|filler| lower.strip_prefix(filler).is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric())))
}

/// Small words a title-cased phrase leaves in lower case (`Statue of Liberty`).
const MINOR_WORDS: &[&str] =
    &["a", "an", "and", "as", "at", "but", "by", "for", "from", "in", "into", "of", "on", "or", "the", "to", "with"];

/// How the model cased the list as a whole; it decides which capitals are meaningful (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStyle {
    Lower,
    Title,
    Sentence,
}

impl ListStyle {
    fn of(items: &[String]) -> ListStyle {
        let initials: Vec<char> = items
            .iter()
            .filter_map(|item| item.chars().find(|c| c.is_alphabetic()))
            .filter(|c| c.is_uppercase() || c.is_lowercase())
            .collect();
        let lower = initials.iter().filter(|c| c.is_lowercase()).count();
        if lower * 2 > initials.len() {
            return ListStyle::Lower;
        }
        let phrases: Vec<&String> = items.iter().filter(|item| item.split_whitespace().count() > 1).collect();
        let title_cased = |phrase: &&String| {
            phrase.split_whitespace().enumerate().all(|(index, word)| {
                (index > 0 && MINOR_WORDS.contains(&word.to_lowercase().as_str()))
                    || word.chars().next().is_some_and(|c| !c.is_lowercase())
            })
        };
        if phrases.len() >= 2 && phrases.iter().all(title_cased) {
            ListStyle::Title
        } else {
            ListStyle::Sentence
        }
    }

    fn keeps_case(self, item: &str) -> bool {
        match self {
            ListStyle::Lower => item.chars().any(char::is_uppercase),
            ListStyle::Title => item.split_whitespace().any(|word| is_acronym(word) || has_inner_capital(word, false)),
            ListStyle::Sentence => item.split_whitespace().enumerate().any(|(index, word)| {
                is_acronym(word)
                    || has_inner_capital(word, true)
                    || (index > 0 && word.chars().next().is_some_and(char::is_uppercase))
            }),
        }
    }
}

/// Two or more letters and digits, with a capital and no lower-case letter: `NASA`, `4K`, `U.S.`.
fn is_acronym(word: &str) -> bool {
    let alphanumeric: Vec<char> = word.chars().filter(|c| c.is_alphanumeric()).collect();
    alphanumeric.len() >= 2
        && alphanumeric.iter().any(|c| c.is_uppercase())
        && !alphanumeric.iter().any(|c| c.is_lowercase())
}

/// A capital after a lower-case letter (`iPhone`, `McDonald's`), or, with `after_punctuation`, after a
/// hyphen or apostrophe that follows a letter (`Coca-Cola`, `O'Brien`).
fn has_inner_capital(word: &str, after_punctuation: bool) -> bool {
    let chars: Vec<char> = word.chars().collect();
    (1..chars.len()).any(|i| {
        chars[i].is_uppercase()
            && (chars[i - 1].is_lowercase()
                || (after_punctuation
                    && i >= 2
                    && matches!(chars[i - 1], '-' | '\'' | '’')
                    && chars[i - 2].is_alphabetic()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(text: &str) -> Vec<String> {
        parse_tags(text).tags
    }

    #[test]
    fn comma_separated_line() {
        assert_eq!(tags("sunset, beach,ocean waves ,  palm trees"), ["sunset", "beach", "ocean waves", "palm trees"]);
    }

    #[test]
    fn semicolons_pipes_and_newlines_separate_too() {
        assert_eq!(tags("sunset; beach | ocean\nsand\r\nsky"), ["sunset", "beach", "ocean", "sand", "sky"]);
    }

    #[test]
    fn numbered_lists_in_every_style() {
        assert_eq!(tags("1. sunset\n2) beach\n(3) ocean\n10. palm trees"), ["sunset", "beach", "ocean", "palm trees"]);
    }

    #[test]
    fn bullets_in_every_style() {
        assert_eq!(
            tags("- sunset\n* beach\n• ocean\n· sand\n+ sky\n– dusk"),
            ["sunset", "beach", "ocean", "sand", "sky", "dusk"]
        );
        assert_eq!(tags("- 1. sunset\n- 2. beach"), ["sunset", "beach"]);
    }

    #[test]
    fn inline_bullets_and_spaced_middle_dots_separate_items() {
        assert_eq!(tags("sunset • beach · ocean"), ["sunset", "beach", "ocean"]);
    }

    #[test]
    fn numbers_inside_tags_are_not_list_markers() {
        assert_eq!(tags("3.5mm jack, 1970s fashion, 4K"), ["3.5mm jack", "1970s fashion", "4K"]);
    }

    #[test]
    fn hashtags_lose_the_hash_and_underscores() {
        assert_eq!(tags("#sunset #beach #golden_hour #ocean"), ["sunset", "beach", "golden hour", "ocean"]);
        assert_eq!(tags("#sunset, #beach"), ["sunset", "beach"]);
    }

    #[test]
    fn markdown_headings_are_not_hashtags() {
        assert_eq!(tags("## Tags\nsunset, beach"), ["sunset", "beach"]);
    }

    #[test]
    fn straight_and_curly_quotes_are_removed() {
        assert_eq!(
            tags(r#""sunset", 'beach', “ocean”, ‘palm trees’, «sand»"#),
            ["sunset", "beach", "ocean", "palm trees", "sand"]
        );
        assert_eq!(tags("\"sunset, beach, ocean\""), ["sunset", "beach", "ocean"]);
    }

    #[test]
    fn apostrophes_inside_tags_stay() {
        assert_eq!(tags("children's toys, rock 'n' roll"), ["children's toys", "rock 'n' roll"]);
    }

    #[test]
    fn preamble_line_ending_with_a_colon_is_dropped() {
        assert_eq!(tags("Here are 15 tags for the image:\n\nsunset, beach, ocean"), ["sunset", "beach", "ocean"]);
        assert_eq!(tags("Sure! Here are the tags:\n1. sunset\n2. beach"), ["sunset", "beach"]);
    }

    #[test]
    fn inline_label_before_the_list_is_dropped() {
        assert_eq!(tags("Tags: sunset, beach, ocean"), ["sunset", "beach", "ocean"]);
        assert_eq!(tags("Here are the tags for this image: sunset, beach"), ["sunset", "beach"]);
        assert_eq!(tags("Sure, here are some tags: sunset, beach"), ["sunset", "beach"]);
    }

    #[test]
    fn grouped_lists_keep_the_items_and_drop_the_group_labels() {
        let text = "**Objects:** palm tree, surfboard\n**Colours:** orange, teal\nMood: calm";
        assert_eq!(tags(text), ["palm tree", "surfboard", "orange", "teal", "calm"]);
    }

    #[test]
    fn items_with_explanations_keep_the_item() {
        let text = "1. **Sunset**: The sky glows orange and pink, low over the water.\n\
                    2. **Beach** - A wide strip of pale sand runs along the shore.\n\
                    3. **Palm trees**";
        assert_eq!(tags(text), ["sunset", "beach", "palm trees"]);
    }

    #[test]
    fn explanations_after_a_dash_or_colon_keep_the_item_even_with_commas() {
        let text = "1. **Red bicycle** – the main subject, leaning against the wall\n\
                    2. **Brick wall**: the background, weathered and warm\n\
                    3. **Sunlight**";
        assert_eq!(tags(text), ["red bicycle", "brick wall", "sunlight"]);
    }

    #[test]
    fn spaced_dashes_between_short_items_separate_them() {
        assert_eq!(tags("sunset - beach – ocean waves"), ["sunset", "beach", "ocean waves"]);
        assert_eq!(tags("Spider-Man, T-shirt"), ["Spider-Man", "t-shirt"]);
    }

    #[test]
    fn closing_remarks_are_dropped() {
        let text =
            "sunset, beach, ocean\nThese tags capture the mood, colours and setting of the image.\nI hope this helps!";
        assert_eq!(tags(text), ["sunset", "beach", "ocean"]);
        assert_eq!(tags("Sure!\nsunset, beach"), ["sunset", "beach"]);
    }

    #[test]
    fn trailing_period_and_exclamation_are_removed_but_abbreviations_keep_theirs() {
        assert_eq!(tags("sunset, beach, ocean."), ["sunset", "beach", "ocean"]);
        assert_eq!(tags("sunset!, Washington D.C., summer…"), ["sunset", "Washington D.C.", "summer"]);
    }

    #[test]
    fn markdown_emphasis_is_removed() {
        assert_eq!(tags("**sunset**, *beach*, __ocean__, `sand`"), ["sunset", "beach", "ocean", "sand"]);
    }

    #[test]
    fn trailing_parenthetical_is_removed() {
        assert_eq!(tags("Coca-Cola (brand), sunset (background)"), ["Coca-Cola", "sunset"]);
    }

    #[test]
    fn whitespace_runs_collapse() {
        assert_eq!(tags("  golden \t hour ,\n\n  beach  "), ["golden hour", "beach"]);
    }

    #[test]
    fn duplicates_in_any_case_keep_the_first() {
        assert_eq!(tags("sunset, beach, Sunset, BEACH, ocean, sunset."), ["sunset", "beach", "ocean"]);
    }

    #[test]
    fn proper_nouns_brands_and_acronyms_keep_their_casing_in_a_lower_case_list() {
        let text =
            "city skyline, night, New York, taxi, NASA, street, iPhone, neon lights, Coca-Cola, McDonald's, Paris";
        let expected = [
            "city skyline",
            "night",
            "New York",
            "taxi",
            "NASA",
            "street",
            "iPhone",
            "neon lights",
            "Coca-Cola",
            "McDonald's",
            "Paris",
        ];
        assert_eq!(tags(text), expected);
    }

    #[test]
    fn sentence_case_list_lowers_initial_capitals_but_keeps_proper_nouns() {
        assert_eq!(
            tags("Sunset, Golden hour, New York, NASA, IPhone case, Coca-Cola, Paris"),
            ["sunset", "golden hour", "New York", "NASA", "iphone case", "Coca-Cola", "paris"]
        );
    }

    #[test]
    fn title_case_list_keeps_only_acronyms_and_inner_capitals() {
        assert_eq!(
            tags("Sunset, Golden Hour, Ocean Waves, Statue of Liberty, NASA Logo, iPhone, Black-And-White"),
            ["sunset", "golden hour", "ocean waves", "statue of liberty", "NASA Logo", "iPhone", "black-and-white"]
        );
    }

    #[test]
    fn long_sentences_are_dropped_not_truncated() {
        assert_eq!(tags("sunset, a beautiful view of the calm ocean at dusk, beach"), ["sunset", "beach"]);
        assert_eq!(tags("one two three four, one two three four five"), ["one two three four"]);
    }

    #[test]
    fn overlong_items_are_dropped() {
        let long = "a".repeat(MAX_TAG_CHARS + 1);
        assert_eq!(tags(&format!("sunset, {long}")), ["sunset"]);
    }

    #[test]
    fn numbers_and_punctuation_alone_are_dropped() {
        assert_eq!(tags("sunset, 42, ---, ..., beach, 2024"), ["sunset", "beach"]);
    }

    #[test]
    fn times_and_urls_are_not_labels() {
        assert_eq!(tags("clock at 10:30, sunset"), ["clock at 10:30", "sunset"]);
    }

    #[test]
    fn processed_list_is_sorted_case_insensitively() {
        let parsed = parse_tags("sunset, NASA, beach, Coca-Cola, iPhone, ocean");
        assert_eq!(parsed.tags, ["sunset", "NASA", "beach", "Coca-Cola", "iPhone", "ocean"]);
        assert_eq!(parsed.tags_processed, ["beach", "Coca-Cola", "iPhone", "NASA", "ocean", "sunset"]);
    }

    #[test]
    fn empty_and_blank_answers_give_empty_lists() {
        for text in ["", "  \n\n ", "Here are the tags:", ", , ;"] {
            let parsed = parse_tags(text);
            assert!(parsed.is_empty() && parsed.tags_processed.is_empty(), "{text:?}: {parsed:?}");
        }
    }

    #[test]
    fn typical_llama_answer() {
        let text = "Here are 15 descriptive tags for the image:\n\n\
                    1. Beach\n2. Sunset\n3. Ocean\n4. Palm trees\n5. Golden hour\n6. Orange\n7. Teal\n\
                    8. Silhouette\n9. Tropical\n10. Serene\n11. Vacation\n12. Photography\n13. Waves\n\
                    14. Relaxation\n15. Hawaii\n\nThese tags capture the main elements and mood of the image.";
        let parsed = parse_tags(text);
        assert_eq!(parsed.tags.len(), 15);
        assert_eq!(&parsed.tags[..5], ["beach", "sunset", "ocean", "palm trees", "golden hour"]);
        assert_eq!(parsed.tags.last().unwrap(), "hawaii");
        assert_eq!(parsed.tags_processed.first().unwrap(), "beach");
    }

    #[test]
    fn lists_split_at_cjk_and_arabic_commas() {
        assert_eq!(parse_tags("日落、海滩，海洋").tags, ["日落", "海滩", "海洋"]);
        assert_eq!(parse_tags("غروب الشمس، شاطئ").tags, ["غروب الشمس", "شاطئ"]);
    }

    #[test]
    fn catalan_middle_dot_inside_a_word_is_not_a_separator() {
        assert_eq!(parse_tags("col·lecció, platja").tags, ["col·lecció", "platja"]);
    }

    #[test]
    fn serialises_with_the_result_field_names() {
        let json = serde_json::to_value(parse_tags("sunset, beach")).unwrap();
        assert_eq!(json, serde_json::json!({"tags": ["sunset", "beach"], "tags_processed": ["beach", "sunset"]}));
    }
}
