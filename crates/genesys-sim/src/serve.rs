//! The `genesys-closer sim` subcommand: run the simulator until Ctrl-C and print
//! how to point the daemon at it.

use serde_json::Value;

use super::{GeneratorConfig, ScriptedFault, SimConfig, start};

/// The `genesys-closer sim` subcommand: starts the simulator, prints how to point
/// the daemon at it, runs the generator if given, fires the timetable of faults,
/// and stops on Ctrl-C.
pub async fn serve_forever(
    cfg: SimConfig,
    gen_cfg: Option<GeneratorConfig>,
    faults: Vec<ScriptedFault>,
) -> anyhow::Result<()> {
    let client_id = cfg.client_id.clone();
    let client_secret = cfg.client_secret.clone();
    let listen = cfg.listen;
    let sim = start(cfg)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let bound = sim.addr();
    if !bound.ip().is_loopback() {
        // The URLs below name loopback for a wildcard address; say what really listens.
        println!(
            "WARNING: bound to {bound}: reachable from other machines, with the fixed \
             simulator credentials below (--allow-remote)\n"
        );
    }
    println!(
        "{}",
        instructions(
            &sim.base_url(),
            &client_id,
            &client_secret,
            gen_cfg.as_ref()
        )
    );
    let generator = gen_cfg.map(|g| sim.spawn_generator(g));
    super::script::schedule(&sim, faults);
    let signal = tokio::signal::ctrl_c().await;
    if let Some(g) = generator {
        g.abort();
    }
    sim.shutdown().await;
    signal?;
    Ok(())
}

/// TOML basic string (JSON string escapes are valid TOML escapes).
fn toml_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Intents the generator gives guests who want a person: the printed rule leaves them.
const LEFT_OPEN: &[&str] = &["TalkToAgent"];

/// What `serve_forever` prints: the endpoints, the credentials and a config
/// snippet in the daemon's format (`[genesys]`, `[stream]`, `[[rule]]`; the secret
/// goes in the environment because the daemon refuses it in the file).
pub fn instructions(
    url: &str,
    client_id: &str,
    secret: &str,
    g: Option<&GeneratorConfig>,
) -> String {
    let queues: Vec<String> = g.map(|g| g.queue_ids.clone()).unwrap_or_default();
    // The rule closes what the generator's guests end with, not a wish for an agent.
    let intents: Vec<String> = g
        .map(|g| {
            g.intents
                .iter()
                .flatten()
                .filter(|i| !LEFT_OPEN.contains(&i.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let list = |v: &[String]| v.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    out += &format!("Genesys Cloud simulator listening on {url}\n");
    out += &format!("  login_url     = {url}   (POST /oauth/token)\n");
    out += &format!("  api_url       = {url}\n");
    out += &format!("  client_id     = {client_id}\n");
    out += &format!("  client_secret = {secret}   (a simulator credential, not a real one)\n");
    if queues.is_empty() {
        out += "  queue ids     = (none: no generator running)\n";
    } else {
        out += &format!("  queue ids     = {}\n", queues.join(", "));
    }
    out += "\nRun the daemon with:\n";
    out += &format!("  export GENESYSCLOUD_OAUTHCLIENT_SECRET={secret}\n");
    out += "and this config:\n\n";
    out += &format!(
        "[genesys]\napi_url = {}\nlogin_url = {}\n",
        toml_str(url),
        toml_str(url)
    );
    out += &format!("client_id = {}\n\n", toml_str(client_id));
    if queues.is_empty() {
        out += "# No generator runs: list the queue ids your conversations will use.\n";
    }
    out += &format!("[stream]\nqueues = [{}]\n", list(&queues));
    out += "\n[daemon]\n# A journal directory of your own (the default, /var/lib/genesys-closer, is the\n\
            # service's; two people trying this on one machine would share it).\n\
            state_dir = \"./genesys-closer-sim-state\"\n";
    if !intents.is_empty() {
        out += &format!(
            "\n[[rule]]\nname = \"sim\"\nintents = [{}]\n",
            list(&intents)
        );
    }
    out += "\nCtrl-C stops the simulator.";
    out
}
