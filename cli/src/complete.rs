//! `kubectl understudy <TAB>`: kubectl (1.26 and later) completes a plugin's arguments by running
//! `kubectl_complete-understudy <words typed after "understudy"> <the word being completed>` from
//! PATH and reading Cobra's format: one candidate per line, then `:<directive>`. Install it as a
//! symlink to `kubectl-understudy`; the binary answers when it is called by that name.

use clap::CommandFactory;

/// Cobra's directives: complete files as usual, or offer no files.
const FILES: u8 = 0;
const NO_FILES: u8 = 4;

/// The name under which kubectl runs a plugin's completion.
pub const COMPLETER: &str = "kubectl_complete-understudy";

/// Flags that take a value (so the word after them is not a subcommand).
fn takes_value(cmd: &clap::Command, word: &str) -> bool {
    let mut all = cmd.get_arguments().collect::<Vec<_>>();
    for s in cmd.get_subcommands() {
        all.extend(s.get_arguments());
    }
    all.iter().any(|a| {
        a.get_action().takes_values()
            && (a.get_long().is_some_and(|l| word == format!("--{l}"))
                || a.get_short().is_some_and(|c| word == format!("-{c}")))
    })
}

/// Candidates for the last of `words` (`contexts`: the kubeconfig's context names), and the directive.
pub fn complete(words: &[String], contexts: &[String]) -> (Vec<String>, u8) {
    let cmd = crate::Cli::command();
    let (partial, done) = match words.split_last() {
        Some((p, d)) => (p.as_str(), d),
        None => ("", &[][..]),
    };
    let starts = |c: &String| c.starts_with(partial);
    match done.last().map(String::as_str) {
        Some("--context") => return (contexts.iter().filter(|c| starts(c)).cloned().collect(), NO_FILES),
        Some("-o" | "--output") => {
            let v = ["text", "json", "yaml"].map(String::from);
            return (v.into_iter().filter(starts).collect(), NO_FILES);
        }
        Some("--kubeconfig") => return (vec![], FILES),
        Some(w) if takes_value(&cmd, w) => return (vec![], NO_FILES),
        _ => {}
    }
    let mut sub = None;
    let mut skip = false;
    for w in done {
        if skip {
            skip = false;
        } else if w.starts_with('-') {
            skip = takes_value(&cmd, w) && !w.contains('=');
        } else if sub.is_none() {
            sub = cmd.get_subcommands().find(|s| s.get_name() == w);
        }
    }
    let out: Vec<String> = if partial.starts_with('-') {
        let mut args: Vec<&clap::Arg> = cmd.get_arguments().collect();
        if let Some(s) = sub {
            args.extend(s.get_arguments());
        }
        let mut v: Vec<String> =
            args.iter().filter_map(|a| a.get_long().map(|l| format!("--{l}"))).filter(starts).collect();
        v.sort();
        v.dedup();
        v
    } else {
        match sub {
            None => cmd.get_subcommands().map(|s| s.get_name().to_string()).filter(starts).collect(),
            Some(s) if s.get_name() == "completion" => ["bash", "zsh", "fish", "elvish", "powershell"]
                .map(String::from)
                .into_iter()
                .filter(starts)
                .collect(),
            Some(_) => vec![],
        }
    };
    (out, NO_FILES)
}

/// Answers kubectl: the candidates, then the directive.
pub fn run(words: &[String]) {
    let contexts: Vec<String> = kube::config::Kubeconfig::read()
        .map(|kc| kc.contexts.into_iter().map(|c| c.name).collect())
        .unwrap_or_default();
    let (candidates, directive) = complete(words, &contexts);
    for c in candidates {
        println!("{c}");
    }
    println!(":{directive}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(words: &[&str]) -> Vec<String> {
        let w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        complete(&w, &["east".into(), "west".into()]).0
    }

    #[test]
    fn subcommands_flags_contexts_and_formats_complete() {
        assert_eq!(c(&["sw"]), ["switchover"]);
        assert!(c(&[""]).contains(&"dry-run".to_string()) && c(&[""]).contains(&"status".to_string()));
        assert_eq!(c(&["status", "chat", "--context", ""]), ["east", "west"]);
        assert_eq!(c(&["status", "chat", "--context", "east", "--context", "w"]), ["west"]);
        assert_eq!(c(&["status", "-o", "j"]), ["json"]);
        assert_eq!(c(&["switchover", "chat", "--w"]), ["--wait"]);
        assert!(c(&["failover", "--"]).contains(&"--yes".to_string()));
        assert!(c(&["--context", "east", "st"]) == ["status"], "a flag's value is not the subcommand");
        assert_eq!(c(&["completion", "z"]), ["zsh"]);
        assert!(c(&["status", "chat", ""]).is_empty(), "pair names are not listed");
        let w: Vec<String> = ["status", "--kubeconfig", ""].iter().map(|s| s.to_string()).collect();
        assert_eq!(complete(&w, &[]).1, FILES);
    }
}
