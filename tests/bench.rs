//! `post bench --mode secure` and `post sweep` end to end on the tiny pair: the rows' arithmetic,
//! resumption (also after a real kill), random weights, and one clear error per bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{post_error, post_ok};
use post::bench::decoding::BenchRow;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("post-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rows(path: &Path) -> Vec<BenchRow> {
    post::report::read_csv(path).unwrap()
}

#[test]
fn secure_bench_rows_add_up_and_a_rerun_skips_them() {
    let dir = scratch("rows");
    let csv = dir.join("speedup.csv");
    let args = [
        "bench",
        "--mode",
        "secure",
        "--pair",
        "tiny",
        "--prompts",
        "2",
        "--max-new-tokens",
        "6",
        "--ignore-eos",
        "--net",
        "lan",
        "--draft-len",
        "2,3,auto",
        "--sim-seed",
        "1",
        "--plot",
        "--out",
        csv.to_str().unwrap(),
    ];
    post_ok(&args);
    let got = rows(&csv);
    assert_eq!(got.len(), 4, "{got:?}");
    let standard = &got[0];
    assert_eq!(
        (standard.method.as_str(), standard.draft_len.as_str()),
        ("standard", "0")
    );
    assert_eq!(standard.speedup, Some(1.0));
    assert_eq!(standard.tokens, 12, "2 prompts x 6 tokens");
    assert_eq!(standard.secure_steps, 12, "one secure forward per token");
    for r in &got[1..] {
        assert_eq!(r.method, "post");
        assert_eq!(r.tokens, 12);
        // Each step emits its accepted drafts plus one token.
        let accepted = r.mean_accepted.unwrap() * r.secure_steps as f64;
        assert!(
            (accepted + r.secure_steps as f64 - 12.0).abs() < 1e-9,
            "{r:?}"
        );
        assert!(r.mean_accepted.unwrap() <= r.mean_draft_len);
        match r.draft_len.as_str() {
            "auto" => assert!((1.0..=8.0).contains(&r.mean_draft_len), "{r:?}"),
            k => assert!(r.mean_draft_len <= k.parse::<f64>().unwrap(), "{r:?}"),
        }
        let own = r.sec_per_token.unwrap();
        assert!((own - r.sim_seconds / 12.0).abs() < 1e-12);
        assert!((r.sec_per_pass * r.secure_steps as f64 - r.sim_seconds).abs() < 1e-9);
        let speedup = standard.sec_per_token.unwrap() / own;
        assert!((r.speedup.unwrap() - speedup).abs() < 1e-12, "{r:?}");
        assert!(r.online_rounds > 0 && r.online_mb > 0.0 && r.offline_mb > 0.0);
    }
    for (figure, text) in [
        ("speedup-speedup.svg", "K = 3"),
        ("speedup-accepted.svg", "draft length K"),
    ] {
        let svg = std::fs::read_to_string(dir.join(figure)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains(text), "{figure}");
    }
    // A rerun finds every cell in the file and measures nothing.
    let before = std::fs::read_to_string(&csv).unwrap();
    post_ok(&args);
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), before);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn random_weights_report_costs_and_no_acceptance() {
    let dir = scratch("random");
    let csv = dir.join("random.csv");
    post_ok(&[
        "bench",
        "--pair",
        "tiny",
        "--weights",
        "random",
        "--prompts",
        "1",
        "--max-new-tokens",
        "4",
        "--ignore-eos",
        "--net",
        "wan",
        "--draft-len",
        "2",
        "--sim-seed",
        "1",
        "--out",
        csv.to_str().unwrap(),
    ]);
    let got = rows(&csv);
    assert_eq!(got.len(), 2);
    for r in &got {
        assert_eq!(r.weights, "random");
        assert_eq!(
            (
                r.mean_accepted,
                r.acceptance_rate,
                r.sec_per_token,
                r.speedup
            ),
            (None, None, None, None),
            "{r:?}"
        );
        // On the WAN a secure pass costs at least its rounds' latency.
        let rounds_per_pass = r.online_rounds as f64 / r.secure_steps as f64;
        assert!(r.sec_per_pass >= rounds_per_pass * 0.040, "{r:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

fn write_grid(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("grid.toml");
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn bad_grids_and_outputs_get_one_clear_error_each() {
    let dir = scratch("bad");
    let good = "pairs = [\"tiny\"]\ndatasets = [\"datasets/code-completion.jsonl\"]\nnets = [\"lan\"]\ndraft_lens = [2]\ntemperatures = [0.0]\n";
    let grid = write_grid(&dir, &format!("{good}colour = \"red\"\n"));
    let err = post_error(&["sweep", grid.to_str().unwrap(), "--out", "x.csv"]);
    assert!(err.contains("unknown field `colour`"), "{err}");

    let grid = write_grid(&dir, &good.replace("nets = [\"lan\"]", "nets = []"));
    let err = post_error(&["sweep", grid.to_str().unwrap(), "--out", "x.csv"]);
    assert!(err.contains("\"nets\" is empty"), "{err}");

    let grid = write_grid(&dir, good);
    let err = post_error(&["sweep", grid.to_str().unwrap()]);
    assert!(err.contains("names no `out` file"), "{err}");

    let missing = dir.join("no-such-folder").join("x.csv");
    let err = post_error(&[
        "sweep",
        grid.to_str().unwrap(),
        "--out",
        missing.to_str().unwrap(),
    ]);
    assert!(err.contains("does not exist"), "{err}");

    let old = dir.join("old.csv");
    std::fs::write(&old, "pair,net,speedup\ndefault,lan,2.0\n").unwrap();
    let err = post_error(&[
        "sweep",
        grid.to_str().unwrap(),
        "--out",
        old.to_str().unwrap(),
    ]);
    assert!(err.contains("another schema"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&old).unwrap(),
        "pair,net,speedup\ndefault,lan,2.0\n",
        "the old file is untouched"
    );

    let err = post_error(&[
        "bench",
        "--pair",
        "tiny",
        "--draft-len",
        "0",
        "--out",
        old.to_str().unwrap(),
    ]);
    assert!(err.contains("at least 1"), "{err}");
    let err = post_error(&[
        "bench",
        "--pair",
        "no-such-pair",
        "--out",
        dir.join("y.csv").to_str().unwrap(),
    ]);
    assert!(err.contains("unknown pair"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_sweep_killed_mid_cell_resumes_with_no_duplicate_and_no_lost_row() {
    let dir = scratch("kill");
    let csv = dir.join("sweep.csv");
    // 2 nets x 2 temperatures = 4 cells of 1 standard + 2 POST rows each. One prompt of 4 tokens:
    // a cell still takes about 3 s of CPU (was 9 s with 2 prompts of 8), far longer than the
    // 100 ms between the first cell's rows and the kill, so the kill lands inside a later cell.
    let grid = write_grid(
        &dir,
        &format!(
            "pairs = [\"tiny\"]\ndatasets = [\"datasets/code-completion.jsonl\"]\nnets = [\"lan\", \"wan\"]\ndraft_lens = [2, 3]\ntemperatures = [0.0, 1.0]\nprompts = 1\nmax_new_tokens = 4\nignore_eos = true\nsim_seed = 1\nout = {:?}\n",
            csv.to_str().unwrap()
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_post"))
        .args(["sweep", grid.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the first cell is written and the second is running.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let start = Instant::now();
    while std::fs::read_to_string(&csv).map_or(0, |t| t.lines().count()) < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no cell written"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the sweep ended before the kill: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let guard = KillOnDrop(child);
    drop(guard);
    let partial = rows(&csv);
    assert!(
        partial.len().is_multiple_of(3) && partial.len() < 12,
        "{}",
        partial.len()
    );

    post_ok(&["sweep", grid.to_str().unwrap()]);
    let all = rows(&csv);
    assert_eq!(all.len(), 12, "every cell once");
    let mut keys: Vec<String> = all.iter().map(BenchRow::key).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 12, "no duplicate row");
    assert_eq!(
        &all[..partial.len()],
        &partial[..],
        "rows written before the kill are kept"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn shards_of_a_sweep_cover_its_cells_once_and_merge_into_its_rows() {
    let dir = scratch("shards");
    let csv = dir.join("sweep.csv");
    // 2 nets x 2 temperatures = 4 cells of 1 standard + 1 POST row each; with these keys shard 0/2
    // holds lan T=1 and wan T=0, shard 1/2 the other two.
    let grid = write_grid(
        &dir,
        &format!(
            "pairs = [\"tiny\"]\ndatasets = [\"datasets/code-completion.jsonl\"]\nnets = [\"lan\", \"wan\"]\ndraft_lens = [2]\ntemperatures = [0.0, 1.0]\nprompts = 1\nmax_new_tokens = 5\nignore_eos = true\nsim_seed = 1\nout = {:?}\n",
            csv.to_str().unwrap()
        ),
    );
    let grid = grid.to_str().unwrap();
    post_ok(&["sweep", grid]);
    let whole = rows(&csv);
    assert_eq!(whole.len(), 8);
    let parts: Vec<PathBuf> = (0..2)
        .map(|i| {
            post_ok(&["sweep", grid, "--shard", &format!("{i}/2")]);
            dir.join(format!("sweep.shard-{i}-of-2.csv"))
        })
        .collect();
    let cells = |rows: &[BenchRow]| {
        let mut c: Vec<String> = rows.iter().map(BenchRow::cell_key).collect();
        c.dedup();
        c
    };
    let sorted_keys = |rows: &[BenchRow]| {
        let mut k: Vec<String> = rows.iter().map(BenchRow::key).collect();
        k.sort();
        k
    };
    let (a, b) = (rows(&parts[0]), rows(&parts[1]));
    assert_eq!((cells(&a).len(), cells(&b).len()), (2, 2), "{a:?} {b:?}");
    assert!(
        cells(&a).iter().all(|c| !cells(&b).contains(c)),
        "no cell twice"
    );
    let mut union = cells(&a);
    union.extend(cells(&b));
    union.sort();
    let mut all = cells(&whole);
    all.sort();
    assert_eq!(union, all, "the shards' cells are the grid's");

    let merged = dir.join("merged.csv");
    let (pa, pb) = (parts[0].to_str().unwrap(), parts[1].to_str().unwrap());
    let said = post_ok(&["sweep", "--merge", merged.to_str().unwrap(), pa, pb]);
    assert!(said.contains("8 rows in"), "{said}");
    let got = rows(&merged);
    assert_eq!(
        sorted_keys(&got),
        sorted_keys(&whole),
        "the unsharded run's rows"
    );
    assert_eq!(&got[..a.len()], &a[..], "the first part's rows first");
    // Same measurements as the unsharded run (the costs are simulated from a fixed seed).
    for r in &got {
        let w = whole.iter().find(|w| w.key() == r.key()).unwrap();
        assert_eq!(
            (r.tokens, r.secure_steps, r.online_rounds, r.mean_accepted),
            (w.tokens, w.secure_steps, w.online_rounds, w.mean_accepted),
            "{}",
            r.key()
        );
    }
    // Merging again (a part twice): nothing new, a warning, the same file.
    let before = std::fs::read_to_string(&merged).unwrap();
    let out = common::post(&["sweep", "--merge", merged.to_str().unwrap(), pb, pb]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already in") && stderr.contains("merged.csv"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&merged).unwrap(), before);

    // A part of another schema is refused by name, and nothing is written.
    let odd = dir.join("odd.csv");
    std::fs::write(&odd, "pair,net,speedup\ntiny,lan,2.0\n").unwrap();
    let fresh = dir.join("fresh.csv");
    let err = post_error(&[
        "sweep",
        "--merge",
        fresh.to_str().unwrap(),
        pa,
        odd.to_str().unwrap(),
    ]);
    assert!(
        err.contains("odd.csv") && err.contains("header differs"),
        "{err}"
    );
    assert!(!fresh.exists());

    // Bad shards and argument mixes: one clear error each, before any measurement.
    // (clap's errors: the error, then usage.)
    let usage_error = |args: &[&str]| {
        let out = common::post(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    };
    for (shard, why) in [
        ("2/2", "I must be below N"),
        ("0/0", "N must be at least 1"),
        ("1", "expected I/N"),
        ("x/2", "not a whole number"),
    ] {
        let err = usage_error(&["sweep", grid, "--shard", shard]);
        assert!(
            err.contains("--shard") && err.contains(why),
            "{shard}: {err}"
        );
    }
    let err = usage_error(&["sweep"]);
    assert!(err.contains("GRID.toml"), "{err}");
    let err = usage_error(&["sweep", "--merge", merged.to_str().unwrap()]);
    assert!(err.contains("--merge"), "{err}");
    let err = usage_error(&["sweep", grid, "--merge", merged.to_str().unwrap(), pa]);
    assert!(err.contains("cannot be used with"), "{err}");
    assert_eq!(rows(&merged), got, "untouched");
    std::fs::remove_dir_all(dir).unwrap();
}
