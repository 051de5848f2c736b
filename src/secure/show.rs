//! A generation as the main job shows it: the prompt, then its completion. On a terminal the
//! prompt is dimmed and the drafts the private model accepted are green, the tokens it sampled
//! itself plain; piped, the text is plain and the prompt's lines are marked with `| `.

use std::io::IsTerminal;

use anyhow::Result;

use crate::model::Tokenizer;

/// Lines of the prompt shown before its completion (the end of it: what is being continued).
const PROMPT_LINES: usize = 6;

const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const RESET: &str = "\x1b[0m";

/// Whether standard output is a terminal (colours) or a pipe or file (plain text).
pub fn styled() -> bool {
    std::io::stdout().is_terminal()
}

/// The last [`PROMPT_LINES`] lines of the prompt, dimmed (terminal) or marked with `| `.
fn prompt_tail(prompt: &str, styled: bool) -> String {
    let lines: Vec<&str> = prompt.lines().collect();
    let start = lines.len().saturating_sub(PROMPT_LINES);
    let mut out = String::new();
    if start > 0 {
        out.push_str(if styled {
            "\x1b[2m...\x1b[0m\n"
        } else {
            "| ...\n"
        });
    }
    for line in &lines[start..] {
        if styled {
            out.push_str(&format!("{DIM}{line}{RESET}\n"));
        } else {
            out.push_str(&format!("| {line}\n"));
        }
    }
    // A prompt that ends inside a line continues on the completion's first line.
    if !prompt.ends_with('\n') && out.ends_with('\n') {
        out.pop();
    }
    out
}

/// The completion, with runs of accepted drafts in green on a terminal.
fn completion(
    tokenizer: &Tokenizer,
    ids: &[u32],
    from_draft: &[bool],
    styled: bool,
) -> Result<String> {
    if !styled || from_draft.len() != ids.len() {
        return tokenizer.decode(ids);
    }
    let mut out = String::new();
    let mut start = 0;
    while start < ids.len() {
        let drafted = from_draft[start];
        let end = (start..ids.len())
            .find(|&i| from_draft[i] != drafted)
            .unwrap_or(ids.len());
        let text = tokenizer.decode(&ids[start..end])?;
        if drafted {
            out.push_str(&format!("{GREEN}{text}{RESET}"));
        } else {
            out.push_str(&text);
        }
        start = end;
    }
    Ok(out)
}

/// The prompt's end, then its completion (a newline between them only where the prompt ends
/// with one).
pub fn prompt_and_completion(
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    ids: &[u32],
    from_draft: &[bool],
    styled: bool,
) -> Result<String> {
    let prompt = tokenizer.decode(prompt_ids)?;
    let mut out = prompt_tail(&prompt, styled);
    if !styled && !prompt.ends_with('\n') {
        // Plain text: the completion starts on its own line, after a marker.
        out.push_str("\n=> ");
    }
    out.push_str(&completion(tokenizer, ids, from_draft, styled)?);
    Ok(out)
}

/// The legend printed once above the completions on a terminal.
pub fn legend() -> String {
    format!("{DIM}prompt (its last lines){RESET}, then the completion: {GREEN}drafts the private model accepted{RESET}, tokens it sampled itself plain")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_marks_the_prompt_and_styled_text_dims_it() {
        let plain = prompt_tail("a\nb\nc\nd\ne\nf\ng\ndef f(x):", false);
        assert_eq!(plain, "| ...\n| c\n| d\n| e\n| f\n| g\n| def f(x):");
        assert!(!plain.contains('\x1b'));
        let styled = prompt_tail("x = 1\n", true);
        assert_eq!(styled, "\x1b[2mx = 1\x1b[0m\n");
    }
}
