//! Reprocessing: the stages a run can start from, how a page's part of a run ends, and the
//! rules every stage applies to a run's input. Pure: no IO.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A pipeline stage a reprocessing run can start from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Scrape,
    Markdown,
    Render,
    Upload,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Self::Scrape, Self::Markdown, Self::Render, Self::Upload];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scrape => "scrape",
            Self::Markdown => "markdown",
            Self::Render => "render",
            Self::Upload => "upload",
        }
    }
}

impl std::str::FromStr for Stage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| format!("unknown stage {s:?}: scrape, markdown, render or upload"))
    }
}

/// How a page's part of a reprocessing run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReprocessOutcome {
    /// New content is served (`pages.updated` was published).
    Updated,
    /// The output was made again and is the same: nothing uploaded, nothing announced.
    Unchanged,
    /// Nothing to redo: the stage's input and version are those of the page's last output.
    Skipped,
    /// The origin says the page is gone.
    Removed,
    /// The page could not be fetched (its state says why).
    Failed,
}

impl ReprocessOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::Skipped => "skipped",
            Self::Removed => "removed",
            Self::Failed => "failed",
        }
    }
}

/// How a page's part of a run ends at `here` when the stage has nothing to redo: `skipped` if
/// the run started here, else `unchanged` (an earlier stage made the same output again).
pub fn nothing_to_redo(from_stage: Stage, here: Stage) -> ReprocessOutcome {
    if from_stage == here {
        ReprocessOutcome::Skipped
    } else {
        ReprocessOutcome::Unchanged
    }
}

/// A stage's deduplication key for its output, made the run's own when there is a run
/// (`run_id`): a run's output is published even where an earlier one had the same input.
pub fn output_key(run_id: Option<Uuid>, base: String) -> String {
    match run_id {
        Some(run_id) => format!("{base}:{run_id}"),
        None => base,
    }
}
