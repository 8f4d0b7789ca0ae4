//! The `funcrl` command line: clap subcommands, config loading and exit codes
//! (0 success, 1 run-time failure, 2 invalid input — config, flag, id, state or action).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, UsageError};
use crate::rollout::{self, Format, Policy, RolloutConfig};

#[derive(Parser, Debug)]
#[command(
    name = "funcrl",
    version,
    about = "Control-oriented model-based RL and deep IV regression on a functional bilevel solver (FuncID)",
    long_about = "funcrl trains model-based agents whose world model is learned by maximum likelihood or, \
through a functional bilevel solver (FuncID), so that the Q-function trained inside it does well on real \
data; the same solver runs deep instrumental-variable regression. Environments follow Python gymnasium \
step for step.\n\nExit codes: 0 success, 1 run-time failure, 2 invalid config, flag or value."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Play actions in a real environment from a seed or a chosen state and print the transitions.
    ///
    /// Replays --actions in one episode, or runs --episodes episodes of a seeded random policy.
    /// With --format jsonl every line is {"episode","t","action","obs","reward","terminated","truncated"};
    /// the line with t = 0 is the reset observation (action and reward null).
    #[command(
        after_help = "Examples:\n  funcrl rollout --env CartPole-v1 --episodes 10\n  \
funcrl rollout --env CartPole-v1 --state 0,0,0.1,0 --actions 1,1,0,1 --format jsonl\n  \
funcrl rollout --env Pendulum-v1 --seed 3 --actions 0.5,-2,2 --format jsonl\n  \
funcrl rollout --config configs/rollout/cartpole_random.toml --set episodes=3"
    )]
    Rollout(RolloutArgs),
    /// List the registered environments with their spaces, time limits and reward thresholds.
    Envs,
    /// List the shipped configs, or print one. Every command's --config takes a shipped config's
    /// name (`cartpole_funcid`, `iv/dsprites_dfiv`) where no file of that name exists.
    #[command(
        after_help = "Examples:\n  funcrl configs\n  funcrl configs cartpole_funcid > my_funcid.toml\n  \
funcrl train --config cartpole_funcid --set total_steps=20000"
    )]
    Configs {
        /// A shipped config to print (name, kind/name, or configs/kind/name.toml).
        name: Option<String>,
    },
    /// Instrumental-variable regression: linear 2SLS on your data, or a deep IV run (DFIV, FuncID,
    /// FuncID-linear, AID, ITD, penalty) from a config, writing a run directory.
    #[command(
        after_help = "Examples:\n  funcrl iv --method 2sls --data d.csv --outcome y --treatment t1,t2 --instrument z1,z2 --exog x1 --format json\n  \
funcrl iv --config configs/iv/dsprites_funcid.toml --seed 3\n  \
funcrl iv --config configs/iv/demand_dfiv.toml --set data.rho=0.25 --set iterations=20\n  \
funcrl iv --resume runs/iv__dsprites__funcid__3__20261201T120000"
    )]
    Iv(crate::iv::IvArgs),
    /// Compare deep IV methods: configs × sizes × seeds → summary table (mean/median/std test
    /// MSE), box plot and outer-loss curves.
    #[command(
        after_help = "Example:\n  funcrl iv-bench --configs configs/iv/dsprites_dfiv.toml,configs/iv/dsprites_funcid.toml --seeds 10 --out runs/iv-bench"
    )]
    IvBench(crate::iv::bench::IvBenchArgs),
    /// Train a model-based agent (mle, funcid, omd, vep) or the model-free soft-Q reference.
    ///
    /// Writes a run directory (config, seed, code version, evals.csv, losses.csv, log.h5,
    /// checkpoint.h5, summary.json); --resume continues a run from its last checkpoint.
    #[command(
        after_help = "Examples:\n  funcrl train --config configs/rl/cartpole_funcid.toml --seed 3\n  \
funcrl train --config configs/rl/cartpole_funcid.toml --set total_steps=20000 --set agent.mode=paper\n  \
funcrl train --resume runs/CartPole-v1__funcid__3__20261125T170000"
    )]
    Train(crate::train::TrainArgs),
    /// Train several agents over several seeds in parallel processes, then plot mean ± std
    /// learning curves (curves.png) and tabulate final return, AUC and steps to the threshold.
    #[command(
        after_help = "Example:\n  funcrl compare --config configs/rl/cartpole_mle.toml configs/rl/cartpole_funcid.toml configs/rl/cartpole_omd.toml --seeds 0,1,2,3,4"
    )]
    Compare(crate::compare::CompareArgs),
    /// Measure a run's world model on held-out real transitions against the true dynamics:
    /// one-step state, reward and value errors, and the open-loop error by horizon.
    ///
    /// Writes inspect.json and inspect.png into the run directory.
    #[command(after_help = "Example:
  funcrl inspect runs/CartPole-v1__funcid__0__20261130T120000 --transitions 2000")]
    Inspect(crate::inspect::InspectArgs),
}

#[derive(Args, Debug, Default)]
pub struct RolloutArgs {
    /// TOML file with the rollout's fields (env, seed, state, actions, policy, episodes,
    /// max_steps, format, [kwargs]); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config field, e.g. --set episodes=3 or --set kwargs.sutton_barto_reward=true.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Environment id (see `funcrl envs`).
    #[arg(long)]
    pub env: Option<String>,
    /// Seed for the environment's reset and the random policy [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Start from this internal state (comma-separated, e.g. CartPole: x,x_dot,theta,theta_dot).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, num_args = 1)]
    pub state: Option<Vec<f64>>,
    /// Actions to replay, comma-separated (integers for discrete spaces, numbers for continuous ones).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, num_args = 1, conflicts_with_all = ["policy", "episodes"])]
    pub actions: Option<Vec<f64>>,
    /// Policy when no actions are given.
    #[arg(long, value_enum)]
    pub policy: Option<Policy>,
    /// Number of episodes for the policy [default: 1].
    #[arg(long)]
    pub episodes: Option<u64>,
    /// Episode time limit, overriding the registered one.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Output format [default: table].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Environment option, e.g. --kwarg sutton_barto_reward=true (repeatable).
    #[arg(long = "kwarg", value_name = "KEY=VALUE")]
    pub kwargs: Vec<String>,
}

impl RolloutArgs {
    /// Config file (if any) + `--set` + flags, validated once through the typed struct.
    pub fn resolve(&self) -> Result<RolloutConfig, UsageError> {
        let mut table = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    UsageError::new(format!("cannot read config {}: {e}", path.display()))
                })?;
                text.parse::<toml::Table>().map_err(|e| {
                    UsageError::new(format!("invalid TOML in {}: {e}", path.display()))
                })?
            }
            None => toml::Table::new(),
        };
        for o in &self.overrides {
            config::apply_override(&mut table, o)?;
        }
        let mut set = |k: &str, v: toml::Value| {
            table.insert(k.to_string(), v);
        };
        if let Some(v) = &self.env {
            set("env", v.clone().into());
        }
        if let Some(v) = self.seed {
            set("seed", toml::Value::Integer(to_i64(v, "--seed")?));
        }
        if let Some(v) = &self.state {
            set(
                "state",
                v.iter()
                    .map(|x| toml::Value::Float(*x))
                    .collect::<Vec<_>>()
                    .into(),
            );
        }
        if let Some(v) = &self.actions {
            set(
                "actions",
                v.iter()
                    .map(|x| toml::Value::Float(*x))
                    .collect::<Vec<_>>()
                    .into(),
            );
        }
        if let Some(v) = self.policy {
            set("policy", toml::Value::try_from(v).expect("enum serializes"));
        }
        if let Some(v) = self.episodes {
            set("episodes", toml::Value::Integer(to_i64(v, "--episodes")?));
        }
        if let Some(v) = self.max_steps {
            set("max_steps", toml::Value::Integer(to_i64(v, "--max-steps")?));
        }
        if let Some(v) = self.format {
            set("format", toml::Value::try_from(v).expect("enum serializes"));
        }
        for kv in &self.kwargs {
            config::apply_override(&mut table, &format!("kwargs.{kv}"))?;
        }
        if !table.contains_key("env") {
            return Err(UsageError::new(
                "rollout needs an environment: --env ID (or `env` in --config); see `funcrl envs`",
            ));
        }
        let source = self
            .config
            .as_ref()
            .map_or("(flags)".to_string(), |p| p.display().to_string());
        config::from_table(table, &source)
    }
}

fn to_i64(v: u64, flag: &str) -> Result<i64, UsageError> {
    i64::try_from(v).map_err(|_| UsageError::new(format!("{flag} {v} is too large")))
}

/// Parses arguments, runs the command, maps errors to exit codes.
pub fn main() -> ExitCode {
    ExitCode::from(main_from(std::env::args_os()))
}

/// [`main`] on given arguments (the first is the program's name), returning the exit code, for
/// embedders such as the Python package's `python -m funcrl`.
pub fn main_from<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::BrokenPipe
            {
                return 0; // `funcrl ... | head` is not an error.
            }
            if let Some(stop) = e.downcast_ref::<crate::signals::Stopped>() {
                eprintln!("{stop}");
                return stop.exit_code();
            }
            eprintln!("error: {e:#}");
            if is_usage_error(&e) { 2 } else { 1 }
        }
    }
}

/// Whether an error is the user's input (config, flag, value, data) rather than a run-time
/// failure: exit code 2, and a `ValueError` in Python.
pub fn is_usage_error(e: &anyhow::Error) -> bool {
    e.downcast_ref::<UsageError>().is_some() || e.downcast_ref::<funcrl_iv::InputError>().is_some()
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match cli.command {
        Command::Rollout(args) => {
            let cfg = args.resolve()?;
            rollout::run(&cfg, &mut out)?;
        }
        Command::Iv(args) => crate::iv::run(&args, &mut out)?,
        Command::IvBench(args) => crate::iv::bench::run(&args, &mut out)?,
        Command::Train(args) => {
            let dir = crate::train::train(&args)?;
            writeln!(out, "{}", dir.display())?;
        }
        Command::Inspect(args) => {
            let r = crate::inspect::inspect_run(&args)?;
            write!(out, "{}", crate::inspect::describe(&r))?;
        }
        Command::Compare(args) => {
            let table = crate::compare::compare(&args)?;
            write!(out, "{table}")?;
        }
        Command::Configs { name: None } => {
            writeln!(out, "{:<28} first line", "name")?;
            for (name, text) in crate::config::SHIPPED {
                let first = text
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches('#')
                    .trim();
                writeln!(out, "{name:<28} {first}")?;
            }
        }
        Command::Configs { name: Some(name) } => {
            let (_, text) = crate::config::shipped(&name).ok_or_else(|| {
                UsageError::new(format!(
                    "no shipped config named {name:?}; known: {}",
                    crate::config::SHIPPED
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            write!(out, "{text}")?;
        }
        Command::Envs => {
            writeln!(
                out,
                "{:<16} {:>9} {:>10}  observation / action",
                "id", "max_steps", "threshold"
            )?;
            for s in funcrl_envs::SPECS {
                let env = funcrl_envs::make(s.id)?;
                let th = s
                    .reward_threshold
                    .map_or("-".to_string(), |t| t.to_string());
                writeln!(
                    out,
                    "{:<16} {:>9} {:>10}  {} / {}",
                    s.id,
                    s.max_episode_steps,
                    th,
                    describe(&env.observation_space()),
                    describe(&env.action_space())
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn describe(space: &funcrl_envs::Space) -> String {
    match space {
        funcrl_envs::Space::Discrete { n, start: 0 } => format!("Discrete({n})"),
        funcrl_envs::Space::Discrete { n, start } => format!("Discrete({n}, start={start})"),
        funcrl_envs::Space::Box { low, .. } => format!("Box(f32, ({},))", low.len()),
    }
}
