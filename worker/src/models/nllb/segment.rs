//! Splits text into sentences before NLLB translation and puts the translations back together.
//! NLLB-200 is trained on single sentences and drops or repeats sentences of longer input.
//!
//! # Layout
//!
//! Paragraphs are separated by one or more blank (empty or whitespace-only) lines; [`Segmented::join`]
//! separates them by exactly one blank line (`"\n\n"`). A single line break inside a paragraph is
//! kept as `"\n"` (list items, short lines), except where the next line begins with a lowercase
//! letter and the line before does not end with a sentence end or `:`: that is a sentence wrapped
//! across lines, and the break becomes a space. `\r\n` counts as `\n`.
//! Sentences of one line are rejoined with a single space, or with nothing after a translation
//! that ends in full-width punctuation (`。`, `！`, `？`, `」`...), as Chinese and Japanese are written.
//!
//! # Sentence ends
//!
//! A sentence ends at `.` `!` `?` `…` `।` `॥` `؟` `۔` `።` `։` (or a run of them, such as `?!` or
//! `...`), plus any closing quotes or brackets right after them (`"` `”` `’` `'` `)` `]` `»` `」`...),
//! when whitespace or the end of the line follows. The full-width `。` `！` `？` `｡` need no
//! whitespace after them (unless a closing quote follows: `「止まれ。」と言った` stays whole).
//! Not a sentence end:
//! - a period inside a token: `3.14`, `1.5x`, `v2.0`, `example.com`, `bob@example.org`;
//! - a mark followed by a word starting in lowercase: `"Why?" she asked.`, `He paused... then`,
//!   `5 p.m. on Monday` (scripts without case are unaffected);
//! - a period after a title or always-followed abbreviation (`Mr.` `Mrs.` `Ms.` `Dr.` `Prof.` `St.`
//!   `Mt.` `vs.` `e.g.` `i.e.` `cf.` `approx.` `Fig.` `Gen.` `Capt.` ...) or after a single capital
//!   letter (`J. R. R. Tolkien`, `George W. Bush`);
//! - a period after an abbreviation that may also end a sentence (`etc.` `Inc.` `Ltd.` `Co.` `Corp.`
//!   `Jr.` `No.` `Jan.`...`Dec.`, and dotted ones like `U.S.` `a.m.` `Ph.D.`) followed by a digit
//!   (`No. 5`, `Jan. 12`); before a capitalised word these do end the sentence (`etc. The`);
//! - a list marker at the start of a line (`1. Slice the bread`, `a. Apples`);
//! - a would-be sentence without any letter or digit (a lone `...`).
//!
//! Long sentences without any of these marks are not split: the caller enforces the token limit.

use std::fmt;
use std::str::FromStr;

/// How text is split before translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Segmentation {
    /// Paragraphs, line breaks and sentences, each sentence translated on its own.
    #[default]
    Sentences,
    /// The whole (trimmed) text as one piece.
    None,
}

impl Segmentation {
    const CHOICES: [(&'static str, Segmentation); 2] =
        [("sentences", Segmentation::Sentences), ("none", Segmentation::None)];
}

/// A segmentation mode that is not one of `sentences`, `none`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown segmentation `{input}`; expected one of: sentences, none")]
pub struct UnknownSegmentation {
    pub input: String,
}

impl FromStr for Segmentation {
    type Err = UnknownSegmentation;

    fn from_str(input: &str) -> Result<Segmentation, UnknownSegmentation> {
        Segmentation::CHOICES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(input.trim()))
            .map(|(_, mode)| *mode)
            .ok_or_else(|| UnknownSegmentation { input: input.to_string() })
    }
}

impl fmt::Display for Segmentation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, _) = Segmentation::CHOICES.iter().find(|(_, mode)| mode == self).expect("every mode has a name");
        f.write_str(name)
    }
}

/// Why translated pieces cannot be put back together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    #[error("expected {expected} translated pieces (one per source piece), got {actual}")]
    PieceCountMismatch { expected: usize, actual: usize },
}

/// A text split into pieces to translate, and how to put the translations back together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segmented {
    /// Trimmed, non-empty, in text order.
    pieces: Vec<String>,
    /// For each paragraph, for each of its lines, how many consecutive pieces it holds.
    pieces_per_line_per_paragraph: Vec<Vec<usize>>,
}

impl Segmented {
    /// Splits `text` into pieces; empty or whitespace-only text gives no pieces.
    pub fn split(text: &str, mode: Segmentation) -> Segmented {
        let mut segmented = Segmented { pieces: Vec::new(), pieces_per_line_per_paragraph: Vec::new() };
        match mode {
            Segmentation::None => {
                let whole = text.trim();
                if !whole.is_empty() {
                    segmented.pieces.push(whole.to_string());
                    segmented.pieces_per_line_per_paragraph.push(vec![1]);
                }
            }
            Segmentation::Sentences => {
                let text = text.replace("\r\n", "\n").replace('\r', "\n");
                for paragraph in paragraphs(&text) {
                    let mut pieces_per_line = Vec::new();
                    for line in unwrap_lines(&paragraph) {
                        let sentences = split_sentences(&line);
                        pieces_per_line.push(sentences.len());
                        segmented.pieces.extend(sentences);
                    }
                    segmented.pieces_per_line_per_paragraph.push(pieces_per_line);
                }
            }
        }
        segmented
    }

    /// The pieces to translate, in text order.
    pub fn pieces(&self) -> &[String] {
        &self.pieces
    }

    /// True when there is nothing to translate.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Rejoins translated pieces (same count and order as [`Segmented::pieces`]) in the source
    /// layout: sentences of a line joined by a space, lines by `"\n"`, paragraphs by `"\n\n"`.
    /// Translations are trimmed; empty ones are left out.
    pub fn join(&self, translated: &[String]) -> Result<String, SegmentError> {
        if translated.len() != self.pieces.len() {
            return Err(SegmentError::PieceCountMismatch { expected: self.pieces.len(), actual: translated.len() });
        }
        let mut translated = translated.iter().map(|piece| piece.trim());
        let mut paragraphs = Vec::new();
        for pieces_per_line in &self.pieces_per_line_per_paragraph {
            let mut lines = Vec::new();
            for &count in pieces_per_line {
                let line = join_sentences(translated.by_ref().take(count));
                if !line.is_empty() {
                    lines.push(line);
                }
            }
            if !lines.is_empty() {
                paragraphs.push(lines.join("\n"));
            }
        }
        Ok(paragraphs.join("\n\n"))
    }
}

/// Paragraphs as lists of trimmed, non-empty lines.
fn paragraphs(text: &str) -> Vec<Vec<&str>> {
    let mut paragraphs = Vec::new();
    let mut current = Vec::new();
    for line in text.split('\n').map(str::trim) {
        if line.is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    paragraphs
}

/// Joins a line that starts with a lowercase letter to the line before it, unless that one ends
/// a sentence or introduces something (`:`): the line was wrapped inside a sentence.
fn unwrap_lines(lines: &[&str]) -> Vec<String> {
    let mut unwrapped: Vec<String> = Vec::new();
    for line in lines {
        let starts_lowercase = line.chars().next().is_some_and(char::is_lowercase);
        match unwrapped.last_mut() {
            Some(previous) if starts_lowercase && !ends_line_deliberately(previous) => {
                previous.push(' ');
                previous.push_str(line);
            }
            _ => unwrapped.push(line.to_string()),
        }
    }
    unwrapped
}

fn ends_line_deliberately(line: &str) -> bool {
    line.trim_end_matches(is_closing_mark).chars().next_back().is_some_and(|c| is_sentence_end(c) || c == ':')
}

/// Sentences need whitespace (or the end of the line) after these.
fn is_spaced_sentence_end(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '।' | '॥' | '؟' | '۔' | '።' | '։' | '‼' | '⁇' | '⁈' | '⁉')
}

/// Full-width marks that end a sentence with no whitespace after them.
fn is_full_width_sentence_end(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '｡')
}

fn is_sentence_end(c: char) -> bool {
    is_spaced_sentence_end(c) || is_full_width_sentence_end(c)
}

/// Closing quotes and brackets that stay with the sentence they close.
fn is_closing_mark(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '”' | '’' | ')' | ']' | '}' | '»' | '›' | '」' | '』' | '）' | '】' | '》' | '〉' | '〕' | '］'
    )
}

/// Full-width punctuation after which Chinese and Japanese start the next sentence with no space.
fn ends_with_full_width_punctuation(text: &str) -> bool {
    text.chars()
        .next_back()
        .is_some_and(|c| is_full_width_sentence_end(c) || matches!(c, '」' | '』' | '）' | '】' | '》' | '〉' | '〕'))
}

/// Abbreviations (lowercase, without the final period) after which a sentence never ends.
const NEVER_SENTENCE_FINAL_ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "mx", "messrs", "dr", "prof", "st", "mt", "vs", "e.g", "eg", "i.e", "ie", "cf", "approx", "fig",
    "figs", "gen", "capt", "cmdr", "lt", "col", "sgt", "adm", "rev", "hon", "gov", "sen", "rep", "pres", "mme", "mlle",
    "viz",
];

/// Abbreviations that may end a sentence, but do not before a number (`No. 5`, `Jan. 12`).
const SENTENCE_FINAL_ABBREVIATIONS: &[&str] = &[
    "etc", "inc", "ltd", "co", "corp", "jr", "sr", "no", "nos", "vol", "vols", "pp", "p", "ca", "al", "ed", "eds",
    "dept", "est", "ave", "blvd", "rd", "ft", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
    "nov", "dec",
];

/// Opening marks to look past when reading the first word of a sentence or token.
fn is_opening_mark(c: char) -> bool {
    matches!(c, '"' | '\'' | '“' | '‘' | '(' | '[' | '{' | '«' | '‹' | '¿' | '¡' | '「' | '『' | '（')
}

/// Splits one line into trimmed sentences.
fn split_sentences(line: &str) -> Vec<String> {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let byte_at = |index: usize| chars.get(index).map_or(line.len(), |(byte, _)| *byte);
    let mut sentences = Vec::new();
    let mut sentence_start = 0;
    let mut index = 0;
    while index < chars.len() {
        if !is_sentence_end(chars[index].1) {
            index += 1;
            continue;
        }
        let marks_start = index;
        let mut end = index;
        while end < chars.len() && is_sentence_end(chars[end].1) {
            end += 1;
        }
        let marks: String = chars[marks_start..end].iter().map(|(_, c)| c).collect();
        let marks_end = end;
        while end < chars.len() && is_closing_mark(chars[end].1) {
            end += 1;
        }
        let has_closing_marks = end > marks_end;
        index = end;
        let followed_by_space = end == chars.len() || chars[end].1.is_whitespace();
        let full_width_end = !has_closing_marks && marks.chars().any(is_full_width_sentence_end);
        if !followed_by_space && !full_width_end {
            continue;
        }
        let mut next_start = end;
        while next_start < chars.len() && chars[next_start].1.is_whitespace() {
            next_start += 1;
        }
        if next_start == chars.len() {
            break;
        }
        let sentence = &line[sentence_start..byte_at(end)];
        let next = &line[byte_at(next_start)..];
        if ends_sentence(sentence, &marks, has_closing_marks, next) {
            sentences.push(sentence.trim().to_string());
            sentence_start = byte_at(next_start);
        }
    }
    let rest = line[sentence_start..].trim();
    if !rest.is_empty() {
        sentences.push(rest.to_string());
    }
    sentences
}

/// Whether `sentence` (up to and including its end `marks` and closing marks) really ends before
/// `next`.
fn ends_sentence(sentence: &str, marks: &str, has_closing_marks: bool, next: &str) -> bool {
    if !sentence.chars().any(char::is_alphanumeric) {
        return false;
    }
    let next_first = next.chars().find(|c| !is_opening_mark(*c));
    if next_first.is_some_and(char::is_lowercase) {
        return false;
    }
    if marks != "." || has_closing_marks {
        return true;
    }
    let before_period = &sentence[..sentence.len() - 1];
    let token = before_period.split_whitespace().next_back().unwrap_or("").trim_start_matches(is_opening_mark);
    let lowercase = token.to_lowercase();
    if NEVER_SENTENCE_FINAL_ABBREVIATIONS.contains(&lowercase.as_str()) {
        return false;
    }
    let is_single_capital = {
        let mut letters = token.chars();
        letters.next().is_some_and(char::is_uppercase) && letters.next().is_none()
    };
    if is_single_capital {
        return false;
    }
    let may_be_abbreviation =
        SENTENCE_FINAL_ABBREVIATIONS.contains(&lowercase.as_str()) || is_dotted_abbreviation(token);
    if may_be_abbreviation && next_first.is_some_and(|c| c.is_ascii_digit()) {
        return false;
    }
    let is_list_marker =
        before_period.trim() == token && (token.chars().all(|c| c.is_ascii_digit()) || token.chars().count() == 1);
    !is_list_marker
}

/// `U.S`, `a.m`, `Ph.D` (the final period already removed): short letter groups joined by periods.
fn is_dotted_abbreviation(token: &str) -> bool {
    token.contains('.')
        && token
            .split('.')
            .all(|group| (1..=2).contains(&group.chars().count()) && group.chars().all(char::is_alphabetic))
}

/// Joins one line's translated sentences with a space, or with nothing after full-width punctuation.
fn join_sentences<'a>(sentences: impl Iterator<Item = &'a str>) -> String {
    let mut line = String::new();
    for sentence in sentences.filter(|sentence| !sentence.is_empty()) {
        if !line.is_empty() && !ends_with_full_width_punctuation(&line) {
            line.push(' ');
        }
        line.push_str(sentence);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentences(text: &str) -> Vec<String> {
        Segmented::split(text, Segmentation::Sentences).pieces().to_vec()
    }

    fn identity_round_trip(text: &str) -> String {
        let segmented = Segmented::split(text, Segmentation::Sentences);
        segmented.join(segmented.pieces()).unwrap()
    }

    #[test]
    fn splits_plain_sentences() {
        assert_eq!(
            sentences("A cat sleeps. A dog barks! Is it noon? Yes."),
            ["A cat sleeps.", "A dog barks!", "Is it noon?", "Yes."]
        );
    }

    #[test]
    fn titles_and_always_followed_abbreviations_do_not_end_sentences() {
        assert_eq!(
            sentences("Mr. Smith met Dr. Jones and Prof. Lee at St. Mary's. They talked."),
            ["Mr. Smith met Dr. Jones and Prof. Lee at St. Mary's.", "They talked."]
        );
        assert_eq!(
            sentences("Fruit, e.g. Apples, i.e. Red ones, vs. Pears. Done."),
            ["Fruit, e.g. Apples, i.e. Red ones, vs. Pears.", "Done."]
        );
        assert_eq!(
            sentences("It weighs approx. 5 kg. See Fig. 3 for details."),
            ["It weighs approx. 5 kg.", "See Fig. 3 for details."]
        );
    }

    #[test]
    fn sentence_final_abbreviations_end_sentences_only_before_capitals() {
        assert_eq!(
            sentences("Apples, pears, etc. The table is wooden."),
            ["Apples, pears, etc.", "The table is wooden."]
        );
        assert_eq!(
            sentences("Apples, pears, etc. and a jug. Acme Inc. is in the U.S. and has No. 5 in stock."),
            ["Apples, pears, etc. and a jug.", "Acme Inc. is in the U.S. and has No. 5 in stock."]
        );
        assert_eq!(
            sentences("The meeting is at 5 p.m. on Jan. 12 in Ltd. offices. It ends at 6 p.m. Then we eat."),
            ["The meeting is at 5 p.m. on Jan. 12 in Ltd. offices.", "It ends at 6 p.m.", "Then we eat."]
        );
    }

    #[test]
    fn decimals_and_versions_do_not_end_sentences() {
        assert_eq!(
            sentences("Pi is about 3.14. The lens zooms 1.5x, as in v2.0 of the spec. It costs $3."),
            ["Pi is about 3.14.", "The lens zooms 1.5x, as in v2.0 of the spec.", "It costs $3."]
        );
    }

    #[test]
    fn urls_emails_and_domains_do_not_end_sentences() {
        assert_eq!(
            sentences(
                "The sign reads example.com and www.shop.co.uk in red. Mail bob@example.org. See https://a.b/c?d=1 now."
            ),
            [
                "The sign reads example.com and www.shop.co.uk in red.",
                "Mail bob@example.org.",
                "See https://a.b/c?d=1 now."
            ]
        );
    }

    #[test]
    fn initials_do_not_end_sentences() {
        assert_eq!(
            sentences("J. R. R. Tolkien wrote it. George W. Bush read it. The vitamin C. Pills."),
            ["J. R. R. Tolkien wrote it.", "George W. Bush read it.", "The vitamin C. Pills."]
        );
    }

    #[test]
    fn closing_quotes_stay_with_their_sentence() {
        assert_eq!(sentences(r#"He said "Stop." Then left."#), [r#"He said "Stop.""#, "Then left."]);
        assert_eq!(
            sentences("She wrote “Done!” Then slept. (It was late.) The end."),
            ["She wrote “Done!”", "Then slept.", "(It was late.)", "The end."]
        );
    }

    #[test]
    fn question_in_quote_followed_by_lowercase_does_not_split() {
        assert_eq!(
            sentences(r#""Why?" she asked. "Because!" he said. "Go." They went."#),
            [r#""Why?" she asked."#, r#""Because!" he said."#, r#""Go.""#, "They went."]
        );
    }

    #[test]
    fn ellipsis_splits_only_before_a_capital() {
        assert_eq!(
            sentences("He paused... then went on. He waited… Nothing came. Odd?! Yes."),
            ["He paused... then went on.", "He waited…", "Nothing came.", "Odd?!", "Yes."]
        );
        assert_eq!(sentences("... And then it rained."), ["... And then it rained."]);
    }

    #[test]
    fn list_markers_do_not_become_sentences() {
        assert_eq!(
            sentences("1. Slice the bread. Toast it.\n2. Butter it.\na. Apples"),
            ["1. Slice the bread.", "Toast it.", "2. Butter it.", "a. Apples"]
        );
    }

    #[test]
    fn long_text_without_punctuation_stays_one_piece() {
        let text = "a very long caption without any punctuation ".repeat(40);
        assert_eq!(sentences(&text), [text.trim()]);
    }

    #[test]
    fn cjk_full_width_enders_split_without_whitespace() {
        let text = "今天天气很好。我们去公园吧！你来吗？好的";
        assert_eq!(sentences(text), ["今天天气很好。", "我们去公园吧！", "你来吗？", "好的"]);
        assert_eq!(identity_round_trip(text), text);
    }

    #[test]
    fn japanese_quote_followed_by_text_stays_whole() {
        assert_eq!(sentences("「止まれ。」と彼は言った。猫がいる。"), ["「止まれ。」と彼は言った。", "猫がいる。"]);
    }

    #[test]
    fn hindi_danda_and_arabic_question_mark_end_sentences() {
        assert_eq!(sentences("यह एक बिल्ली है। वह सो रही है।"), ["यह एक बिल्ली है।", "वह सो रही है।"]);
        assert_eq!(sentences("هل هذا قط؟ نعم، إنه قط."), ["هل هذا قط؟", "نعم، إنه قط."]);
        assert_eq!(sentences("یہ ایک بلی ہے۔ وہ سو رہی ہے۔"), ["یہ ایک بلی ہے۔", "وہ سو رہی ہے۔"]);
    }

    #[test]
    fn paragraphs_round_trip_with_normalised_blank_lines() {
        let text = "  First one.  Second one.\nNew line here.\n\n\n   \nSecond paragraph.\r\n\r\nThird!  ";
        let segmented = Segmented::split(text, Segmentation::Sentences);
        assert_eq!(segmented.pieces(), ["First one.", "Second one.", "New line here.", "Second paragraph.", "Third!"]);
        assert_eq!(
            segmented.join(segmented.pieces()).unwrap(),
            "First one. Second one.\nNew line here.\n\nSecond paragraph.\n\nThird!"
        );
    }

    #[test]
    fn join_puts_translations_in_the_source_layout() {
        let segmented = Segmented::split("One. Two.\nThree.\n\nFour.", Segmentation::Sentences);
        let translated: Vec<String> = ["Un.", " Deux. ", "Trois.", "Quatre."].map(String::from).to_vec();
        assert_eq!(segmented.join(&translated).unwrap(), "Un. Deux.\nTrois.\n\nQuatre.");
    }

    #[test]
    fn join_adds_no_space_after_full_width_punctuation() {
        let segmented = Segmented::split("Hello there. Goodbye now.", Segmentation::Sentences);
        let translated = vec!["你好。".to_string(), "再见。".to_string()];
        assert_eq!(segmented.join(&translated).unwrap(), "你好。再见。");
    }

    #[test]
    fn join_leaves_out_empty_translations() {
        let segmented = Segmented::split("One. Two. Three.", Segmentation::Sentences);
        let translated = vec!["Un.".to_string(), "  ".to_string(), "Trois.".to_string()];
        assert_eq!(segmented.join(&translated).unwrap(), "Un. Trois.");
    }

    #[test]
    fn wrapped_line_continuing_in_lowercase_joins_the_sentence() {
        let segmented = Segmented::split(
            "The image shows a cat\nsitting on a mat. It sleeps.\nA dog watches.",
            Segmentation::Sentences,
        );
        assert_eq!(segmented.pieces(), ["The image shows a cat sitting on a mat.", "It sleeps.", "A dog watches."]);
        assert_eq!(
            segmented.join(segmented.pieces()).unwrap(),
            "The image shows a cat sitting on a mat. It sleeps.\nA dog watches."
        );
    }

    #[test]
    fn list_items_keep_their_line_breaks() {
        let text = "Objects:\n- a red car\n- a blue bike";
        let segmented = Segmented::split(text, Segmentation::Sentences);
        assert_eq!(segmented.pieces(), ["Objects:", "- a red car", "- a blue bike"]);
        assert_eq!(segmented.join(segmented.pieces()).unwrap(), text);
    }

    #[test]
    fn image_caption_with_three_paragraphs() {
        let caption = "The image shows a busy street market at dusk. Vendors sell fruit, \
            e.g. mangoes and oranges, from wooden stalls lit by strings of bulbs. A man in a \
            blue jacket is paying for a bag of apples.\n\n\
            The colours are warm: orange light from the lamps contrasts with the deep blue sky. \
            The street is approx. 10 m wide and crowded.\n\n\
            Overall, the mood is lively and cheerful... with a hint of evening calm.";
        let segmented = Segmented::split(caption, Segmentation::Sentences);
        assert_eq!(
            segmented.pieces(),
            [
                "The image shows a busy street market at dusk.",
                "Vendors sell fruit, e.g. mangoes and oranges, from wooden stalls lit by strings of bulbs.",
                "A man in a blue jacket is paying for a bag of apples.",
                "The colours are warm: orange light from the lamps contrasts with the deep blue sky.",
                "The street is approx. 10 m wide and crowded.",
                "Overall, the mood is lively and cheerful... with a hint of evening calm.",
            ]
        );
        let translated: Vec<String> = (1..=6).map(|n| format!("S{n}.")).collect();
        assert_eq!(segmented.join(&translated).unwrap(), "S1. S2. S3.\n\nS4. S5.\n\nS6.");
        assert_eq!(segmented.join(segmented.pieces()).unwrap(), caption);
    }

    #[test]
    fn none_mode_keeps_the_whole_text_as_one_piece() {
        let text = "  One. Two.\n\nThree.  ";
        let segmented = Segmented::split(text, Segmentation::None);
        assert_eq!(segmented.pieces(), ["One. Two.\n\nThree."]);
        let translated = vec![" Un. Deux.\n\nTrois. ".to_string()];
        assert_eq!(segmented.join(&translated).unwrap(), "Un. Deux.\n\nTrois.");
    }

    #[test]
    fn empty_input_gives_no_pieces() {
        for mode in [Segmentation::Sentences, Segmentation::None] {
            let segmented = Segmented::split(" \n\t\n ", mode);
            assert!(segmented.is_empty());
            assert_eq!(segmented.pieces().len(), 0);
            assert_eq!(segmented.join(&[]).unwrap(), "");
        }
    }

    #[test]
    fn join_rejects_a_different_piece_count() {
        let segmented = Segmented::split("One. Two.", Segmentation::Sentences);
        let error = segmented.join(&["Un.".to_string()]).unwrap_err();
        assert_eq!(error, SegmentError::PieceCountMismatch { expected: 2, actual: 1 });
        assert_eq!(error.to_string(), "expected 2 translated pieces (one per source piece), got 1");
    }

    #[test]
    fn segmentation_parses_its_names_and_lists_choices_on_error() {
        assert_eq!("sentences".parse(), Ok(Segmentation::Sentences));
        assert_eq!(" None ".parse(), Ok(Segmentation::None));
        assert_eq!(Segmentation::default(), Segmentation::Sentences);
        assert_eq!(Segmentation::None.to_string(), "none");
        assert_eq!(Segmentation::Sentences.to_string(), "sentences");
        let error = "words".parse::<Segmentation>().unwrap_err();
        assert_eq!(error.to_string(), "unknown segmentation `words`; expected one of: sentences, none");
    }
}
