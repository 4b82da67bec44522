//! What the worker asks a vision-language model to do: the built-in tasks (`builtin.toml`, embedded) plus
//! user overrides from a TOML file of the same schema, and the parser of tag-list answers ([`tags`]).
//!
//! # Task files
//!
//! A task file is a list of `[[task]]` tables:
//!
//! ```toml
//! [[task]]
//! name = "describe"            # [a-z0-9_-]+; an existing name overrides, a new one adds a task
//! prompt = "Describe ..."      # the text after the image (Llama 3.2 Vision)
//! video_prompt = "Describe ..." # the text after the video frames (LLaVA-NeXT-Video)
//! kind = "text"                # "text" or "tags" (the answer goes through tags::parse_tags)
//! max_new_tokens = 512         # 1..=8192
//! translate = true             # translate the answer into the job's languages
//! description = "..."          # one line for listings and --help
//! ```
//!
//! In a user file every key but `name` is optional. For an existing task, the keys present replace the
//! built-in values and the others are kept (a file may change only a `prompt`). A new task needs a `prompt`;
//! the rest defaults to `video_prompt` = `prompt`, `kind` = text, `max_new_tokens` =
//! [`DEFAULT_MAX_NEW_TOKENS`], `translate` = true and a description naming the file. Unknown keys are errors,
//! so that a misspelt `promt` is not silently ignored. A file is applied whole or not at all.

pub mod tags;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vislingo_proto::lang::edit_distance;

pub use self::tags::{parse_tags, Tags};
/// Whether a task runs on a still image or on a video clip; it picks [`Task::prompt_for`]'s prompt.
pub use vislingo_proto::AssetKind as MediaKind;

/// The embedded built-in tasks.
const BUILTIN_TOML: &str = include_str!("builtin.toml");
/// How errors name the embedded file.
const BUILTIN_ORIGIN: &str = "builtin.toml (embedded)";

/// `max_new_tokens` of a new user task that does not set it.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 512;
/// The largest `max_new_tokens` a task may ask for.
pub const MAX_NEW_TOKENS_LIMIT: usize = 8192;

/// How a task's answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Free text, stored (and translated) as the model wrote it.
    Text,
    /// A tag list, read with [`tags::parse_tags`].
    Tags,
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskKind::Text => "text",
            TaskKind::Tags => "tags",
        })
    }
}

/// One validated task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    pub name: String,
    /// The instruction that follows an image.
    pub prompt: String,
    /// The same instruction worded for a video clip.
    pub video_prompt: String,
    pub kind: TaskKind,
    /// The generation budget for the answer.
    pub max_new_tokens: usize,
    /// Whether the answer is translated into the job's languages. A `Tags` answer is translated tag by tag.
    pub translate: bool,
    /// One line for listings and `--help`.
    pub description: String,
}

impl Task {
    /// The prompt for an image or for a video clip.
    pub fn prompt_for(&self, media: MediaKind) -> &str {
        match media {
            MediaKind::Image => &self.prompt,
            MediaKind::Video => &self.video_prompt,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !is_valid_name(&self.name) {
            return Err("the name must be lower-case letters, digits, `_` and `-` only".to_string());
        }
        if self.prompt.trim().is_empty() {
            return Err("`prompt` is empty".to_string());
        }
        if self.video_prompt.trim().is_empty() {
            return Err("`video_prompt` is empty".to_string());
        }
        if !(1..=MAX_NEW_TOKENS_LIMIT).contains(&self.max_new_tokens) {
            return Err(format!("`max_new_tokens` is {}, outside 1..={MAX_NEW_TOKENS_LIMIT}", self.max_new_tokens));
        }
        Ok(())
    }
}

/// Why a task file or a task name was refused.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("cannot read task file {}: {error}", .path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("task file {origin} is not a valid task list: {message}")]
    Syntax { origin: String, message: String },
    #[error("task file {origin}, task `{name}`: {problem}")]
    Invalid { origin: String, name: String, problem: String },
    #[error("unknown task `{name}`{}; known tasks: {}", suggestion_hint(.suggestion), .known.join(", "))]
    Unknown { name: String, suggestion: Option<String>, known: Vec<String> },
    #[error("empty task list; name one or more of: {}", .known.join(", "))]
    EmptyList { known: Vec<String> },
    #[error("empty item {position} in task list `{list}` (doubled or trailing comma?)")]
    EmptyListItem { list: String, position: usize },
    #[error("task `{name}` is named twice in task list `{list}`")]
    Duplicate { list: String, name: String },
}

fn suggestion_hint(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(name) => format!(" (did you mean `{name}`?)"),
        None => String::new(),
    }
}

/// The tasks a worker knows: the built-ins, in `builtin.toml` order, then user tasks in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSet {
    tasks: Vec<Task>,
}

/// A `[[task]]` table as written; which keys are required depends on where it comes from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: String,
    prompt: Option<String>,
    video_prompt: Option<String>,
    kind: Option<TaskKind>,
    /// Signed so that a negative value gets the range message rather than a serde type error.
    max_new_tokens: Option<i64>,
    translate: Option<bool>,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    #[serde(default)]
    task: Vec<RawTask>,
}

impl TaskSet {
    /// The four built-in tasks: `describe`, `tags`, `sentiment` and `ad`.
    pub fn builtin() -> TaskSet {
        match parse_builtin(BUILTIN_TOML) {
            Ok(set) => set,
            // The tests parse the embedded file, so this is a build that skipped them.
            Err(error) => panic!("{error}"),
        }
    }

    /// The built-in tasks with the user task file at `path` applied (see the module docs).
    pub fn load_overrides(path: impl AsRef<Path>) -> Result<TaskSet, TaskError> {
        let mut set = TaskSet::builtin();
        set.apply_overrides_file(path)?;
        Ok(set)
    }

    /// Applies the task file at `path` to this set.
    pub fn apply_overrides_file(&mut self, path: impl AsRef<Path>) -> Result<(), TaskError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|error| TaskError::Read { path: path.to_path_buf(), error })?;
        self.apply_overrides(&text, &path.display().to_string())
    }

    /// Applies task-file text; `origin` names it in errors. On error the set is left unchanged.
    pub fn apply_overrides(&mut self, text: &str, origin: &str) -> Result<(), TaskError> {
        let file = parse_file(text, origin)?;
        let mut tasks = self.tasks.clone();
        let mut seen = HashSet::new();
        for raw in file.task {
            let invalid =
                |problem: String| TaskError::Invalid { origin: origin.to_string(), name: raw.name.clone(), problem };
            if !seen.insert(raw.name.clone()) {
                return Err(invalid("the task is defined twice in this file".to_string()));
            }
            let max_new_tokens = raw.max_new_tokens.map(|value| checked_max_new_tokens(value).map_err(&invalid));
            let max_new_tokens = max_new_tokens.transpose()?;
            match tasks.iter_mut().find(|task| task.name == raw.name) {
                Some(task) => {
                    let mut merged = task.clone();
                    if let Some(prompt) = &raw.prompt {
                        merged.prompt = prompt.clone();
                    }
                    if let Some(video_prompt) = &raw.video_prompt {
                        merged.video_prompt = video_prompt.clone();
                    }
                    merged.kind = raw.kind.unwrap_or(merged.kind);
                    merged.max_new_tokens = max_new_tokens.unwrap_or(merged.max_new_tokens);
                    merged.translate = raw.translate.unwrap_or(merged.translate);
                    if let Some(description) = &raw.description {
                        merged.description = description.clone();
                    }
                    merged.validate().map_err(&invalid)?;
                    *task = merged;
                }
                None => {
                    let Some(prompt) = raw.prompt.clone() else {
                        let known: Vec<&str> = tasks.iter().map(|task| task.name.as_str()).collect();
                        let hint = match nearest(&raw.name, &known) {
                            Some(name) => format!("did you mean `{name}`? "),
                            None => String::new(),
                        };
                        return Err(invalid(format!(
                            "not an existing task ({hint}known: {}), and a new task needs a `prompt`",
                            known.join(", ")
                        )));
                    };
                    let task = Task {
                        name: raw.name.clone(),
                        video_prompt: raw.video_prompt.clone().unwrap_or_else(|| prompt.clone()),
                        prompt,
                        kind: raw.kind.unwrap_or(TaskKind::Text),
                        max_new_tokens: max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
                        translate: raw.translate.unwrap_or(true),
                        description: raw.description.clone().unwrap_or_else(|| format!("user task from {origin}")),
                    };
                    task.validate().map_err(&invalid)?;
                    tasks.push(task);
                }
            }
        }
        self.tasks = tasks;
        Ok(())
    }

    /// The task called `name` (surrounding whitespace and case are ignored).
    pub fn get(&self, name: &str) -> Result<&Task, TaskError> {
        let key = name.trim().to_lowercase();
        self.tasks.iter().find(|task| task.name == key).ok_or_else(|| {
            let known = self.names();
            TaskError::Unknown {
                name: name.trim().to_string(),
                suggestion: nearest(&key, &known).map(str::to_string),
                known: known.into_iter().map(str::to_string).collect(),
            }
        })
    }

    /// The tasks of a comma-separated list such as `describe,tags`, in the order given. Unknown names,
    /// empty items and repeated names are errors.
    pub fn parse_list(&self, list: &str) -> Result<Vec<&Task>, TaskError> {
        if list.trim().is_empty() {
            return Err(TaskError::EmptyList { known: self.names().into_iter().map(str::to_string).collect() });
        }
        let mut tasks: Vec<&Task> = Vec::new();
        for (index, item) in list.split(',').enumerate() {
            if item.trim().is_empty() {
                return Err(TaskError::EmptyListItem { list: list.to_string(), position: index + 1 });
            }
            let task = self.get(item)?;
            if tasks.iter().any(|seen| seen.name == task.name) {
                return Err(TaskError::Duplicate { list: list.to_string(), name: task.name.clone() });
            }
            tasks.push(task);
        }
        Ok(tasks)
    }

    /// Task names, built-ins first.
    pub fn names(&self) -> Vec<&str> {
        self.tasks.iter().map(|task| task.name.as_str()).collect()
    }

    /// All tasks, built-ins first.
    pub fn iter(&self) -> impl Iterator<Item = &Task> {
        self.tasks.iter()
    }
}

fn parse_file(text: &str, origin: &str) -> Result<TaskFile, TaskError> {
    toml::from_str(text).map_err(|error: toml::de::Error| TaskError::Syntax {
        origin: origin.to_string(),
        message: error.to_string().trim_end().to_string(),
    })
}

/// Built-ins must set every key but `translate`.
fn parse_builtin(text: &str) -> Result<TaskSet, TaskError> {
    let file = parse_file(text, BUILTIN_ORIGIN)?;
    let mut tasks: Vec<Task> = Vec::new();
    for raw in file.task {
        let invalid = |problem: String| TaskError::Invalid {
            origin: BUILTIN_ORIGIN.to_string(),
            name: raw.name.clone(),
            problem,
        };
        let missing = |key: &str| invalid(format!("a built-in task must set `{key}`"));
        if tasks.iter().any(|task| task.name == raw.name) {
            return Err(invalid("the task is defined twice in this file".to_string()));
        }
        let task = Task {
            name: raw.name.clone(),
            prompt: raw.prompt.clone().ok_or_else(|| missing("prompt"))?,
            video_prompt: raw.video_prompt.clone().ok_or_else(|| missing("video_prompt"))?,
            kind: raw.kind.ok_or_else(|| missing("kind"))?,
            max_new_tokens: checked_max_new_tokens(raw.max_new_tokens.ok_or_else(|| missing("max_new_tokens"))?)
                .map_err(&invalid)?,
            translate: raw.translate.unwrap_or(true),
            description: raw.description.clone().ok_or_else(|| missing("description"))?,
        };
        task.validate().map_err(&invalid)?;
        tasks.push(task);
    }
    Ok(TaskSet { tasks })
}

fn checked_max_new_tokens(value: i64) -> Result<usize, String> {
    usize::try_from(value)
        .ok()
        .filter(|value| (1..=MAX_NEW_TOKENS_LIMIT).contains(value))
        .ok_or_else(|| format!("`max_new_tokens` is {value}, outside 1..={MAX_NEW_TOKENS_LIMIT}"))
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// The known name nearest to `input`: one that starts with it (`desc` -> `describe`), else the closest by
/// edit distance within about a third of its length.
fn nearest<'a>(input: &str, known: &[&'a str]) -> Option<&'a str> {
    let input = input.trim().to_lowercase();
    if input.is_empty() {
        return None;
    }
    if input.chars().count() >= 2 {
        if let Some(name) = known.iter().find(|name| name.starts_with(&input)) {
            return Some(name);
        }
    }
    let input: Vec<char> = input.chars().collect();
    known
        .iter()
        .map(|name| {
            let candidate: Vec<char> = name.chars().collect();
            (edit_distance(&input, &candidate), candidate.len(), *name)
        })
        .filter(|(distance, length, _)| *distance <= (length / 3).max(1))
        .min_by_key(|(distance, _, _)| *distance)
        .map(|(_, _, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_overrides(text: &str) -> Result<TaskSet, TaskError> {
        let mut set = TaskSet::builtin();
        set.apply_overrides(text, "user-tasks.toml")?;
        Ok(set)
    }

    #[test]
    fn builtins_are_the_four_tasks_in_order() {
        assert_eq!(TaskSet::builtin().names(), ["describe", "tags", "sentiment", "ad"]);
    }

    #[test]
    fn builtins_parse_and_validate() {
        let set = parse_builtin(BUILTIN_TOML).expect("builtin.toml parses");
        for task in set.iter() {
            assert!(task.validate().is_ok(), "{}", task.name);
            assert!(!task.description.trim().is_empty(), "{}", task.name);
            assert!(!task.description.contains('\n'), "{}: description is one line", task.name);
            assert!(task.translate, "{}", task.name);
        }
    }

    #[test]
    fn builtin_kinds_and_token_budgets() {
        let set = TaskSet::builtin();
        let budget = |name: &str| set.get(name).unwrap().max_new_tokens;
        assert_eq!(set.get("tags").unwrap().kind, TaskKind::Tags);
        assert_eq!(set.get("describe").unwrap().kind, TaskKind::Text);
        assert_eq!((budget("describe"), budget("tags"), budget("sentiment"), budget("ad")), (512, 128, 384, 768));
    }

    #[test]
    fn builtin_prompts_are_single_paragraphs_without_stray_whitespace() {
        for task in TaskSet::builtin().iter() {
            for prompt in [&task.prompt, &task.video_prompt] {
                assert_eq!(prompt.trim(), prompt.as_str(), "{}", task.name);
                assert!(!prompt.contains('\n'), "{}: the TOML line continuations joined the lines", task.name);
                assert!(!prompt.contains("  "), "{}: a double space", task.name);
            }
        }
    }

    #[test]
    fn video_prompts_speak_of_the_clip_and_image_prompts_of_the_image() {
        for task in TaskSet::builtin().iter() {
            assert_eq!(task.prompt_for(MediaKind::Image), task.prompt);
            assert_eq!(task.prompt_for(MediaKind::Video), task.video_prompt);
            assert!(task.prompt.contains("this image"), "{}", task.name);
            assert!(!task.prompt.contains("video"), "{}", task.name);
            assert!(task.video_prompt.contains("this video clip"), "{}", task.name);
            assert!(!task.video_prompt.contains("image"), "{}", task.name);
        }
    }

    #[test]
    fn override_of_one_field_keeps_the_others() {
        let builtin = TaskSet::builtin();
        let set = with_overrides("[[task]]\nname = \"describe\"\nprompt = \"Describe it in one sentence.\"\n").unwrap();
        let before = builtin.get("describe").unwrap();
        let after = set.get("describe").unwrap();
        assert_eq!(after.prompt, "Describe it in one sentence.");
        assert_eq!(after.video_prompt, before.video_prompt);
        assert_eq!((after.kind, after.max_new_tokens, after.translate), (before.kind, 512, true));
        assert_eq!(after.description, before.description);
        assert_eq!(set.names(), builtin.names());
        assert_eq!(set.get("tags").unwrap(), builtin.get("tags").unwrap());
    }

    #[test]
    fn override_can_turn_translation_off_and_change_the_budget() {
        let set = with_overrides("[[task]]\nname = \"ad\"\ntranslate = false\nmax_new_tokens = 1024\n").unwrap();
        let ad = set.get("ad").unwrap();
        assert!(!ad.translate);
        assert_eq!(ad.max_new_tokens, 1024);
        assert_eq!(ad.prompt, TaskSet::builtin().get("ad").unwrap().prompt);
    }

    #[test]
    fn new_user_task_is_added_after_the_builtins_with_defaults() {
        let set =
            with_overrides("[[task]]\nname = \"alt-text\"\nprompt = \"Write alt text for this image.\"\n").unwrap();
        assert_eq!(set.names(), ["describe", "tags", "sentiment", "ad", "alt-text"]);
        let task = set.get("alt-text").unwrap();
        assert_eq!(task.kind, TaskKind::Text);
        assert_eq!(task.max_new_tokens, DEFAULT_MAX_NEW_TOKENS);
        assert!(task.translate);
        assert_eq!(task.prompt_for(MediaKind::Video), "Write alt text for this image.");
        assert_eq!(task.description, "user task from user-tasks.toml");
    }

    #[test]
    fn new_user_task_may_be_a_tag_task_with_its_own_video_prompt() {
        let text = r#"
            [[task]]
            name = "objects"
            kind = "tags"
            prompt = "List the objects in this image, comma-separated."
            video_prompt = "List the objects in this video, comma-separated."
            max_new_tokens = 64
            description = "Objects only."
        "#;
        let set = with_overrides(text).unwrap();
        let task = set.get("objects").unwrap();
        assert_eq!((task.kind, task.max_new_tokens), (TaskKind::Tags, 64));
        assert_eq!(task.prompt_for(MediaKind::Video), "List the objects in this video, comma-separated.");
        assert_eq!(task.description, "Objects only.");
    }

    #[test]
    fn new_task_without_prompt_is_refused_with_the_nearest_existing_name() {
        let error = with_overrides("[[task]]\nname = \"descibe\"\nmax_new_tokens = 300\n").unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, TaskError::Invalid { .. }));
        assert!(message.contains("user-tasks.toml"), "{message}");
        assert!(message.contains("did you mean `describe`?"), "{message}");
        assert!(message.contains("needs a `prompt`"), "{message}");
    }

    #[test]
    fn invalid_values_are_refused_and_leave_the_set_unchanged() {
        let cases = [
            ("[[task]]\nname = \"Bad Name\"\nprompt = \"x\"\n", "lower-case letters"),
            ("[[task]]\nname = \"describe\"\nprompt = \"  \"\n", "`prompt` is empty"),
            ("[[task]]\nname = \"new\"\nprompt = \"x\"\nvideo_prompt = \"\"\n", "`video_prompt` is empty"),
            ("[[task]]\nname = \"tags\"\nmax_new_tokens = 0\n", "outside 1..=8192"),
            ("[[task]]\nname = \"tags\"\nmax_new_tokens = 8193\n", "outside 1..=8192"),
            ("[[task]]\nname = \"tags\"\nmax_new_tokens = -5\n", "`max_new_tokens` is -5"),
            ("[[task]]\nname = \"a\"\nprompt = \"x\"\n[[task]]\nname = \"a\"\nprompt = \"y\"\n", "defined twice"),
        ];
        for (text, expected) in cases {
            let mut set = TaskSet::builtin();
            let message = set.apply_overrides(text, "user-tasks.toml").unwrap_err().to_string();
            assert!(message.contains(expected) && message.contains("user-tasks.toml"), "{text}: {message}");
            assert_eq!(set, TaskSet::builtin(), "{text}");
        }
    }

    #[test]
    fn a_failing_file_applies_none_of_its_tasks() {
        let text =
            "[[task]]\nname = \"describe\"\nprompt = \"Short.\"\n[[task]]\nname = \"tags\"\nmax_new_tokens = 0\n";
        let mut set = TaskSet::builtin();
        assert!(set.apply_overrides(text, "user-tasks.toml").is_err());
        assert_eq!(set.get("describe").unwrap().prompt, TaskSet::builtin().get("describe").unwrap().prompt);
    }

    #[test]
    fn misspelt_key_is_an_error_naming_the_key() {
        let message = with_overrides("[[task]]\nname = \"describe\"\npromt = \"x\"\n").unwrap_err().to_string();
        assert!(message.contains("user-tasks.toml") && message.contains("promt"), "{message}");
    }

    #[test]
    fn malformed_toml_file_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("my-tasks.toml");
        std::fs::write(&path, "[[task]\nname = \"describe\"\n").unwrap();
        let error = TaskSet::load_overrides(&path).unwrap_err();
        assert!(matches!(error, TaskError::Syntax { .. }), "{error:?}");
        assert!(error.to_string().contains(&path.display().to_string()), "{error}");
    }

    #[test]
    fn missing_file_error_names_the_file_and_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let error = TaskSet::load_overrides(&path).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, TaskError::Read { .. }));
        assert!(message.contains("absent.toml") && message.contains("No such file"), "{message}");
    }

    #[test]
    fn load_overrides_reads_a_file_on_top_of_the_builtins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.toml");
        std::fs::write(&path, "[[task]]\nname = \"sentiment\"\nmax_new_tokens = 200\n").unwrap();
        let set = TaskSet::load_overrides(&path).unwrap();
        assert_eq!(set.get("sentiment").unwrap().max_new_tokens, 200);
        assert_eq!(set.names().len(), 4);
    }

    #[test]
    fn empty_file_changes_nothing() {
        assert_eq!(with_overrides("").unwrap(), TaskSet::builtin());
    }

    #[test]
    fn get_ignores_case_and_whitespace() {
        assert_eq!(TaskSet::builtin().get(" Describe ").unwrap().name, "describe");
    }

    #[test]
    fn unknown_name_error_suggests_the_nearest_and_lists_the_known() {
        let set = TaskSet::builtin();
        for (input, nearest) in
            [("descibe", "describe"), ("tag", "tags"), ("sentimnet", "sentiment"), ("sent", "sentiment")]
        {
            let message = set.get(input).unwrap_err().to_string();
            assert!(message.contains(&format!("did you mean `{nearest}`?")), "{input}: {message}");
            assert!(message.ends_with("known tasks: describe, tags, sentiment, ad"), "{message}");
        }
    }

    #[test]
    fn far_off_name_gets_no_suggestion() {
        let error = TaskSet::builtin().get("translate").unwrap_err();
        assert!(matches!(error, TaskError::Unknown { suggestion: None, .. }), "{error:?}");
        assert_eq!(error.to_string(), "unknown task `translate`; known tasks: describe, tags, sentiment, ad");
    }

    #[test]
    fn parse_list_keeps_the_order_given() {
        let set = TaskSet::builtin();
        let names: Vec<&str> =
            set.parse_list("tags, describe ,ad").unwrap().iter().map(|task| task.name.as_str()).collect();
        assert_eq!(names, ["tags", "describe", "ad"]);
    }

    #[test]
    fn parse_list_refuses_empty_lists_and_items() {
        let set = TaskSet::builtin();
        assert!(matches!(set.parse_list(" "), Err(TaskError::EmptyList { .. })));
        assert!(matches!(set.parse_list("describe,,tags"), Err(TaskError::EmptyListItem { position: 2, .. })));
        assert!(matches!(set.parse_list("describe,"), Err(TaskError::EmptyListItem { position: 2, .. })));
    }

    #[test]
    fn parse_list_refuses_duplicates_and_unknown_names() {
        let set = TaskSet::builtin();
        let duplicate = set.parse_list("describe,tags,Describe").unwrap_err();
        assert!(matches!(&duplicate, TaskError::Duplicate { name, .. } if name == "describe"), "{duplicate:?}");
        let unknown = set.parse_list("describe,sentimet").unwrap_err();
        assert!(matches!(&unknown, TaskError::Unknown { suggestion: Some(name), .. } if name == "sentiment"));
    }

    #[test]
    fn parse_list_accepts_user_tasks() {
        let set = with_overrides("[[task]]\nname = \"alt_text\"\nprompt = \"Write alt text.\"\n").unwrap();
        assert_eq!(set.parse_list("alt_text,tags").unwrap()[0].name, "alt_text");
    }
}
