//! Build script: the git revision roomguard is built from, for `roomguard_build_info` and
//! `roomguard --version`. `RG_GIT_REVISION` set at build time wins (a build from a
//! source tarball, a packager's choice); otherwise `git rev-parse`, else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

// Not `ROOMGUARD_*`: cargo also sets this variable when it runs the tests, and every
// `ROOMGUARD_*` variable is read as a configuration override.
fn main() {
    println!("cargo:rerun-if-env-changed=RG_GIT_REVISION");
    let revision = match std::env::var("RG_GIT_REVISION") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_string(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it names (a commit)
            // and packed-refs. Worktrees keep them in different directories: ask git.
            let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
            if let Some(branch) = git(&["rev-parse", "--symbolic-full-name", "HEAD"]).filter(|b| b != "HEAD") {
                watched.push(branch);
            }
            for name in watched {
                if let Some(path) = git(&["rev-parse", "--git-path", &name])
                    && std::path::Path::new(&path).exists()
                {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
            // (No "-modified" suffix: this script does not rerun when a source file changes.)
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo:rustc-env=RG_GIT_REVISION={revision}");
}
