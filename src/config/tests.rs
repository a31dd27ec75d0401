use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;

fn toml(text: &str) -> Result<Config, ConfigError> {
    load_str(text, Format::Toml, "test.toml", Some(BTreeMap::new()))
}

fn problems(text: &str) -> Vec<String> {
    match toml(text) {
        Ok(_) => panic!("expected the config to be rejected"),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn an_empty_file_gets_every_default() {
    let config = toml("").expect("empty config is valid");
    assert_eq!(config, Config::default());
}

#[test]
fn the_embedded_default_is_valid_and_serves_helloworld() {
    let config = load_str(EMBEDDED_DEFAULT, Format::Toml, "default", Some(BTreeMap::new())).expect("valid");
    let hellos = config.components_of(Kind::Hellos);
    assert_eq!(hellos.len(), 1);
    assert_eq!(hellos[0].type_name, "helloworld");
    assert_eq!(hellos[0].meta("hello"), Some("greeting"));
}

#[test]
fn every_section_is_read() {
    let config = toml(
        r#"
        [server]
        grpc = "0.0.0.0:1"
        actuator = "localhost:2"
        dapr_http = "disabled"
        shutdown_grace_period = "3s"
        [app]
        app_id = "orders"
        grpc_callback_port = 9999
        callback_protocol = "dapr"
        [supervisor]
        backoff_min = "10ms"
        backoff_max = "1s"
        max_restarts = 3
        restart_window = "5s"
        health_interval = "100ms"
        health_timeout = "50ms"
        health_failure_threshold = 2
        init_timeout = "1s"
        queue_capacity = 8
        fail_fast = true
        [log]
        level = "debug"
        format = "json"
        [hellos.a]
        type = "helloworld"
        queue_capacity = 2
        metadata = { hello = "hi", n = 3 }
        "#,
    )
    .expect("valid");
    assert_eq!(config.server.grpc, "0.0.0.0:1".parse::<SocketAddr>().expect("addr"));
    assert_eq!(
        config.server.actuator,
        "127.0.0.1:2".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(config.server.dapr_http, None);
    assert_eq!(config.server.shutdown_grace_period, Duration::from_secs(3));
    assert_eq!(config.app.app_id, "orders");
    assert_eq!(config.app.grpc_callback_port, 9999);
    assert_eq!(config.app.callback_protocol, CallbackProtocol::Dapr);
    assert_eq!(config.supervisor.max_restarts, 3);
    assert_eq!(config.supervisor.health_timeout, Duration::from_millis(50));
    assert!(config.supervisor.fail_fast);
    assert_eq!(config.log.format, LogFormat::Json);
    let a = &config.components_of(Kind::Hellos)[0];
    assert_eq!(a.queue_capacity, Some(2));
    assert_eq!(a.meta("hello"), Some("hi"));
    assert_eq!(a.meta("n"), Some("3"));
}

#[test]
fn all_problems_are_reported_at_once_with_their_paths() {
    let found = problems(
        r#"
        [server]
        grpc = "not-an-address"
        shutdown_grace_period = "soon"
        colour = "blue"
        [supervisor]
        backoff_min = 5
        [hellos.greeter]
        metadata = {}
        [hellos.other]
        type = "nope"
        "#,
    );
    let expect = [
        "server.grpc: 'not-an-address' is not an address",
        "server.shutdown_grace_period: 'soon' is not a duration",
        "server.colour: unknown field",
        "supervisor.backoff_min: expected a duration with a unit",
        "hellos.greeter.type: is required",
        "hellos.other.type: unknown type 'nope' for hellos; known types: helloworld",
    ];
    for e in expect {
        assert!(found.iter().any(|p| p.starts_with(e)), "missing '{e}' in {found:#?}");
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn a_type_of_a_block_not_built_yet_is_rejected() {
    let found = problems("[bindings.b]\ntype = \"kafka\"\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("bindings.b.type: unknown type 'kafka'"),
        "{found:?}"
    );
    assert!(found[0].contains("localstorage"), "names the known types: {found:?}");
}

#[test]
fn component_metadata_is_checked_by_its_type() {
    let found = problems(
        r#"
        [state.a]
        type = "redis"
        [state.b]
        type = "postgresql"
        metadata = { connectionString = "postgres://x", tableName = "x; DROP TABLE y" }
        [state.c]
        type = "redis"
        metadata = { redisHost = "h:1", redisDB = "first", keyPrefix = "a||b" }
        "#,
    );
    let expect = [
        "state.a.metadata.redisHost: is required",
        "state.b.metadata.tableName: 'x; DROP TABLE y' is not a table name",
        "state.c.metadata.redisDB: 'first' is not a database number",
        "state.c.metadata.keyPrefix: 'a||b' must not contain '||'",
    ];
    for e in expect {
        assert!(found.iter().any(|p| p.starts_with(e)), "missing '{e}' in {found:#?}");
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn inconsistent_supervisor_settings_are_rejected() {
    let found = problems("[supervisor]\nbackoff_min = \"2s\"\nbackoff_max = \"1s\"\nqueue_capacity = 0\n");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("supervisor.backoff_max: must not be below"))
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("supervisor.queue_capacity: must be at least 1"))
    );
}

#[test]
fn mtls_needs_its_three_files_and_knows_its_fields() {
    let found = problems("[server.mtls]\nca = \"ca.pem\"\nreload_interval = \"0s\"\ncrt = \"x\"\n");
    for expected in [
        "server.mtls.cert: required",
        "server.mtls.key: required",
        "server.mtls.reload_interval: must be longer than zero",
        "server.mtls.crt: unknown field",
    ] {
        assert!(found.iter().any(|p| p.starts_with(expected)), "{expected} in {found:?}");
    }
    assert!(!found.iter().any(|p| p.starts_with("server.mtls.ca")), "{found:?}");
    let config = toml("[server.mtls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n").expect("valid");
    let mtls = config.server.mtls.expect("mtls");
    assert_eq!(
        (mtls.ca.to_str(), mtls.reload_interval),
        (Some("a"), super::DEFAULT_MTLS_RELOAD_INTERVAL)
    );
}

#[test]
fn bad_enums_and_filters_are_named() {
    let found = problems("[app]\ncallback_protocol = \"soap\"\n[log]\nformat = \"xml\"\nlevel = \"[[\"\n");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("app.callback_protocol: 'soap' is not a callback protocol"))
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("log.format: 'xml' is not a log format"))
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("log.level: '[[' is not a log filter"))
    );
}

#[test]
fn unparsable_text_is_one_problem_naming_the_cause() {
    let e = toml("[server\ngrpc = ").expect_err("broken TOML");
    assert_eq!(e.problems.len(), 1);
    assert!(e.problems[0].message.starts_with("cannot parse"), "{e}");
    assert!(e.to_string().starts_with("invalid config test.toml: 1 problem"), "{e}");
}

#[test]
fn environment_overrides_reach_nested_and_camel_case_keys() {
    let env = BTreeMap::from([
        ("LAYOTTO__SERVER__GRPC".to_owned(), "0.0.0.0:7000".to_owned()),
        ("LAYOTTO__SUPERVISOR__FAIL_FAST".to_owned(), "true".to_owned()),
        ("LAYOTTO__HELLOS__HW__METADATA__HELLO".to_owned(), "from env".to_owned()),
        ("LAYOTTO__APP__GRPC_CALLBACK_PORT".to_owned(), "1234".to_owned()),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ]);
    let text = "[hellos.hw]\ntype = \"helloworld\"\nmetadata = { hello = \"from file\" }\n";
    let config = load_str(text, Format::Toml, "t", Some(env)).expect("valid");
    assert_eq!(config.server.grpc.port(), 7000);
    assert!(config.supervisor.fail_fast);
    assert_eq!(config.app.grpc_callback_port, 1234);
    assert_eq!(config.components_of(Kind::Hellos)[0].meta("hello"), Some("from env"));
}

#[test]
fn yaml_reads_the_same_as_toml() {
    let yaml = "server:\n  grpc: 127.0.0.1:1\nhellos:\n  hw:\n    type: helloworld\n    hello: hey\n";
    let config = load_str(yaml, Format::Yaml, "t.yaml", Some(BTreeMap::new())).expect("valid");
    assert_eq!(config.server.grpc.port(), 1);
    assert_eq!(config.components_of(Kind::Hellos)[0].meta("hello"), Some("hey"));
}

#[test]
fn layotto_config_json_is_translated() {
    let json = r#"{
      "servers": [{
        "listeners": [
          {"name": "grpc", "address": "127.0.0.1:4000", "filter_chains": [{"filters": [
            {"type": "grpc", "config": {"server_name": "runtime", "grpc_config": {
              "hellos": {"helloworld": {"type": "helloworld", "hello": "greeting"}},
              "app": {"app_id": "app1", "grpc_callback_port": 9999}
            }}}
          ]}]},
          {"name": "actuator", "address": "127.0.0.1:4001", "filter_chains": [{"filters": []}]}
        ]
      }]
    }"#;
    let config = load_str(json, Format::Json, "config.json", Some(BTreeMap::new())).expect("valid");
    assert_eq!(config.server.grpc.port(), 4000);
    assert_eq!(config.server.actuator.port(), 4001);
    assert_eq!(config.app.app_id, "app1");
    assert_eq!(config.app.grpc_callback_port, 9999);
    assert_eq!(config.components_of(Kind::Hellos)[0].meta("hello"), Some("greeting"));
}

#[test]
fn layotto_file_stores_take_their_array_of_settings() {
    let json = r#"{"servers": [{"listeners": [{"address": "127.0.0.1:4000", "filter_chains": [{"filters": [
        {"type": "grpc", "config": {"server_name": "runtime", "grpc_config": {"file": {
          "file_demo": {"type": "minio", "metadata": [{"endpoint": "127.0.0.1:9000", "accessKeyID": "layotto",
            "accessKeySecret": "layotto_secret", "SSL": false, "region": "us-east-1"}]},
          "local_demo": {"type": "local", "metadata": {}}
        }}}}
    ]}]}]}]}"#;
    let config = load_str(json, Format::Json, "config.json", Some(BTreeMap::new())).expect("valid");
    let files = config.components_of(Kind::File);
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].meta("endpoint"), Some("127.0.0.1:9000"));
    assert_eq!(files[0].meta("SSL"), Some("false"));

    let two = json.replace("}]},", "}, {\"endpoint\": \"x\"}]},");
    let e = load_str(&two, Format::Json, "config.json", Some(BTreeMap::new())).expect_err("two endpoints");
    assert!(e.to_string().contains("file.file_demo.metadata: 2 entries"), "{e}");
}

#[test]
fn flow_control_rules_are_read_and_checked() {
    let config = toml(
        "[server.flow_control]\nmessage = \"m\"\n[[server.flow_control.rules]]\nresource = \"/a.B/C\"\nthreshold = 5\ncontrol_behavior = \"throttle\"\nmax_queueing_time = \"1s\"\n",
    )
    .expect("valid");
    let rules = &config.server.flow_control.rules;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].behavior, super::ControlBehavior::Throttle);
    assert_eq!(rules[0].stat_interval, std::time::Duration::from_secs(1));
    let found = problems(
        "[[server.flow_control.rules]]\nresource = \"SayHello\"\nthreshold = 0\ncontrol_behavior = \"drop\"\ngrade = 1\n",
    );
    for expected in [
        "server.flow_control.rules[0].resource: required",
        "server.flow_control.rules[0].threshold: required",
        "server.flow_control.rules[0].control_behavior: 'drop'",
        "server.flow_control.rules[0].grade: unknown field",
    ] {
        assert!(found.iter().any(|p| p.starts_with(expected)), "{expected} in {found:?}");
    }
}

#[test]
fn layotto_sections_we_do_not_implement_are_reported() {
    let json = r#"{"servers": [{"listeners": [{"address": "127.0.0.1:4000", "filter_chains": [{"filters": [
        {"type": "grpc", "config": {"server_name": "runtime", "grpc_config": {"rpcs": {"dubbo": {}}, "extends": {}}}}
    ]}]}]}]}"#;
    let e = load_str(json, Format::Json, "config.json", Some(BTreeMap::new())).expect_err("unsupported");
    let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, vec!["grpc_config.rpcs"]);
}

/// A Layotto config with `grpc_config` settings beside the given ones.
fn layotto_json(grpc_config: &str) -> String {
    format!(
        r#"{{"servers": [{{"listeners": [{{"address": "127.0.0.1:4000", "filter_chains": [{{"filters": [
        {{"type": "grpc", "config": {{"server_name": "runtime", "grpc_config": {{
            "state": {{"mem": {{"type": "in-memory"}}}}, "lock": {{"locks": {{"type": "in-memory"}}}}{grpc_config}}}}}}}
    ]}}]}}]}}]}}"#
    )
}

#[test]
fn layottos_extends_are_the_api_plugins_settings() {
    let json = layotto_json(r#", "extends": {"counter": {"state_store": "mem", "lock_store": "locks"}}"#);
    let config = load_str(&json, Format::Json, "config.json", Some(BTreeMap::new())).expect("valid");
    assert_eq!(
        config.plugins,
        BTreeMap::from([(
            "counter".to_owned(),
            serde_json::json!({"state_store": "mem", "lock_store": "locks"})
        )])
    );
    assert!(
        load_str(&layotto_json(""), Format::Json, "config.json", Some(BTreeMap::new()))
            .expect("valid")
            .plugins
            .is_empty(),
        "no extends, no plugins"
    );
}

#[test]
fn layottos_extends_are_checked_under_their_own_path() {
    let json = layotto_json(r#", "extends": {"nope": {}, "counter": {"state_store": "other", "lock_store": "locks"}}"#);
    let e = load_str(&json, Format::Json, "config.json", Some(BTreeMap::new())).expect_err("invalid");
    let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["grpc_config.extends.counter.state_store", "grpc_config.extends.nope"],
        "{e}"
    );
    let e = load_str(
        &layotto_json(r#", "extends": [], "plugins": {}"#),
        Format::Json,
        "config.json",
        Some(BTreeMap::new()),
    )
    .expect_err("invalid");
    let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["grpc_config.extends", "grpc_config.plugins"], "{e}");
}

#[test]
fn plugins_name_registered_plugins_with_valid_settings() {
    let base = "[state.mem]\ntype = \"in-memory\"\n[lock.locks]\ntype = \"in-memory\"\n";
    let config = load_str(
        &format!("{base}[plugins.counter]\nstate_store = \"mem\"\nlock_store = \"locks\"\n"),
        Format::Toml,
        "t.toml",
        Some(BTreeMap::new()),
    )
    .expect("valid");
    assert_eq!(config.plugins.keys().collect::<Vec<_>>(), ["counter"]);
    let found = problems(&format!(
        "{base}[plugins.nope]\nx = 1\n[plugins.counter]\nstate_store = \"mem\"\nextra = 1\n"
    ));
    for expected in [
        "plugins.counter.lock_store: required",
        "plugins.counter.extra: unknown field",
        "plugins.nope: unknown API plugin 'nope'; registered plugins: counter",
    ] {
        assert!(found.iter().any(|p| p.starts_with(expected)), "{expected} in {found:?}");
    }
    assert!(
        problems("plugins = 3\n")
            .iter()
            .any(|p| p.starts_with("plugins: expected a table")),
        "a section that is not a table"
    );
}

#[test]
fn layottos_faas_listeners_become_functions_the_ingress_and_the_admin_api() {
    let json = r#"{"servers": [{"listeners": [
        {"address": "127.0.0.1:4000", "filter_chains": [{"filters": [{"type": "grpc", "config": {"server_name": "runtime",
            "grpc_config": {"rpcs": {"mosn": {"config": {"channel": [{"protocol": "http", "listener": "wasm"}]}}}}}}]}]},
        {"name": "wasm", "address": "0.0.0.0:2045", "stream_filters": [{"type": "Layotto", "config": {
            "function1": {"name": "function1", "instance_num": 2, "root_context_id": 3, "region": "eu",
                          "timeout": "100ms", "vm_config": {"engine": "wasmtime", "path": "f1.wasm"}},
            "function2": {"name": "fn2", "instance_num": -1, "vm_config": {"engine": "wasmer", "path": "f2.wasm"}}}}]},
        {"name": "wasm_filter", "address": "127.0.0.1:34998", "stream_filters": [{"type": "wasm_filter"}]}
    ]}]}"#;
    let config = load_str(json, Format::Json, "config.json", Some(BTreeMap::new())).expect("valid");
    assert_eq!(config.server.wasm, Some("0.0.0.0:2045".parse().expect("addr")));
    assert_eq!(config.server.wasm_admin, Some("127.0.0.1:34998".parse().expect("addr")));
    let functions = config.components_of(Kind::Wasm);
    let names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, vec!["fn2", "function1"]);
    let f1 = &functions[1];
    assert_eq!(f1.type_name, "wasmer");
    for (key, value) in [
        ("path", "f1.wasm"),
        ("instanceNum", "2"),
        ("rootContextId", "3"),
        ("timeout", "100ms"),
        ("config.region", "eu"),
    ] {
        assert_eq!(f1.meta(key), Some(value), "{key} in {:?}", f1.metadata);
    }
    // Layotto: 0 or less is one instance per CPU.
    assert_eq!(functions[0].meta("instanceNum"), Some("0"));
    for (from, to, expected) in [
        ("\"wasmer\"", "\"v8\"", "vm_config.engine 'v8'"),
        ("\"f2.wasm\"", "\"\"", "vm_config.path is required"),
    ] {
        let e = load_str(
            &json.replace(from, to),
            Format::Json,
            "config.json",
            Some(BTreeMap::new()),
        )
        .expect_err("bad");
        assert!(
            e.problems.iter().any(|p| p.message.contains(expected)),
            "{:?}",
            e.problems
        );
    }
}

#[test]
fn a_layotto_json_without_the_runtime_filter_is_rejected() {
    let e = load_str(r#"{"servers": []}"#, Format::Json, "c.json", Some(BTreeMap::new())).expect_err("no runtime");
    assert!(e.problems[0].message.contains("server_name"), "{e}");
}

#[test]
fn a_missing_file_and_an_unknown_extension_are_config_errors() {
    let e = load(Path::new("/nonexistent/layotto.toml")).expect_err("missing");
    assert!(e.problems[0].message.starts_with("cannot read"), "{e}");
    let e = load(Path::new("layotto.ini")).expect_err("extension");
    assert!(e.problems[0].message.starts_with("unknown file type"), "{e}");
}

#[test]
fn a_sequencers_bigger_than_becomes_its_metadata() {
    let config = toml(
        r#"
        [sequencer.ids]
        type = "in-memory"
        biggerThan = { order_id = 1000 }
        "#,
    )
    .expect("valid");
    let spec = &config.components_of(Kind::Sequencer)[0];
    assert_eq!(spec.meta("biggerThan.order_id"), Some("1000"));
    assert_eq!(crate::components::sequencer::floor(spec, "order_id"), 1000);
    assert_eq!(crate::components::sequencer::floor(spec, "other"), 0);
}

#[test]
fn unknown_and_malformed_metadata_keys_are_reported() {
    let found = problems(
        r#"
        [state.a]
        type = "in-memory"
        metadata = { keyPrefx = "appid" }
        [sequencer.b]
        type = "in-memory"
        metadata = { "biggerThan.k" = "many", segmentSize = "0" }
        "#,
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("state.a.metadata.keyPrefx: is not a key of this type; known keys: keyPrefix")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("sequencer.b.metadata.biggerThan.k: 'many' is not a whole number")),
        "{found:#?}"
    );
}

/// A 376-byte YAML file of nested aliases once drove `layotto validate` to
/// 8 GB; aliases are refused before anything expands them.
#[test]
fn yaml_alias_bombs_are_refused_before_they_expand() {
    let bomb = r#"
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"#;
    let err = load_str(bomb, Format::Yaml, "bomb.yaml", Some(BTreeMap::new())).expect_err("refused");
    assert!(err.to_string().contains("YAML aliases"), "{err}");
    // Anchors alone, and plain YAML, are fine.
    load_str(
        "app: &app { app_id: x }\n",
        Format::Yaml,
        "anchor.yaml",
        Some(BTreeMap::new()),
    )
    .expect("valid");
}

#[test]
fn an_oversized_config_is_refused_without_parsing_it() {
    let huge = format!("# {}\n", "x".repeat(MAX_CONFIG_BYTES));
    let err = load_str(&huge, Format::Toml, "huge.toml", Some(BTreeMap::new())).expect_err("refused");
    assert!(err.to_string().contains("at most"), "{err}");
}

/// Found by the `config_toml` fuzz target: a top-level key read as a path
/// with a huge index made the config crate allocate petabytes and abort.
#[test]
fn a_key_that_looks_like_a_huge_array_index_is_an_unknown_key_not_an_abort() {
    let err = load_str("'1[33333333392845]'=5\n", Format::Toml, "t.toml", Some(BTreeMap::new()))
        .expect_err("not a config section");
    assert!(err.to_string().contains("1[33333333392845]"), "{err}");
}

/// Found by the `config_yaml` fuzz target: tracing-subscriber's filter
/// parser panicked on a level with leading space and non-ASCII text.
#[test]
fn a_log_level_that_is_not_ascii_is_refused_by_name() {
    let text = "log:\n  level: \" in,ज[ज[loजl\"\n";
    let err = load_str(text, Format::Yaml, "t.yaml", Some(BTreeMap::new())).expect_err("refused");
    assert!(err.to_string().contains("log.level"), "{err}");
    assert!(crate::config::log_filter(" warn").is_ok());
    // A field value is matched literally, not compiled as a regular
    // expression (this one took 4 minutes and 2 GB as a regex).
    // Field values still filter (matched literally; the smoke run replays
    // the 300-byte value that took 4 minutes as a regex).
    let fields = crate::config::log_filter("[span{field=x.y}]=debug");
    assert!(fields.is_ok(), "{fields:?}");
    assert!(crate::config::log_filter(&"x".repeat(2000)).is_err());
    assert!(crate::config::log_filter("layotto=debug,warn").is_ok());
}

#[test]
fn connection_limits_are_at_least_one() {
    let found = problems("[server]\nmax_calls_per_connection = 0\nmax_streams_per_connection = 0\n");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("server.max_calls_per_connection: must be at least 1")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("server.max_streams_per_connection: must be at least 1")),
        "{found:?}"
    );
    let config = load_str(
        "[server]\nmax_calls_per_connection = 64\n",
        Format::Toml,
        "t",
        Some(BTreeMap::new()),
    )
    .expect("valid");
    assert_eq!(config.server.max_calls_per_connection, Some(64));
    assert_eq!(Config::default().server.max_calls_per_connection, None);
}

#[test]
fn app_protocol_port_and_health_checks_are_read_as_daprd_names_them() {
    let config = toml(
        "[app]\napp_id = \"checkout\"\nprotocol = \"http\"\nport = 3000\napi_token = \"t\"\nmax_concurrency = 4\n[app.health_check]\npath = \"/ready\"\n",
    )
    .expect("valid");
    assert_eq!(config.app.callback_protocol, CallbackProtocol::Http);
    assert_eq!(config.app.grpc_callback_port, 3000);
    assert_eq!(config.app.api_token.as_deref(), Some("t"));
    assert_eq!(config.app.max_concurrency, Some(4));
    let check = config.app.health_check.expect("checks on");
    assert_eq!(
        (check.path.as_str(), check.interval, check.timeout, check.threshold),
        ("/ready", Duration::from_secs(5), Duration::from_millis(500), 3)
    );
    let config = toml("[app]\nprotocol = \"grpc\"\n[app.health_check]\nenabled = false\n").expect("valid");
    assert_eq!(config.app.callback_protocol, CallbackProtocol::Dapr);
    assert_eq!(config.app.health_check, None);

    let found = problems(
        "[app]\napp_id = \"a.b\"\nprotocol = \"soap\"\n[app.health_check]\ninterval = \"1s\"\ntimeout = \"2s\"\nthreshold = 0\n",
    );
    for expected in [
        "app.app_id: must not contain '.'",
        "app.protocol: 'soap' is not an app protocol",
        "app.health_check.timeout: must be above zero and not longer",
        "app.health_check.threshold: must be at least 1",
    ] {
        assert!(found.iter().any(|p| p.starts_with(expected)), "{expected} in {found:?}");
    }
    let found =
        problems("[app]\nprotocol = \"http\"\ncallback_protocol = \"layotto\"\nport = 1\ngrpc_callback_port = 2\n");
    assert!(
        found.iter().any(|p| p.starts_with("app.protocol: 'http' contradicts")),
        "{found:?}"
    );
    assert!(found.iter().any(|p| p.starts_with("app.port: differs")), "{found:?}");
}

#[test]
fn subscriptions_are_checked_cel_and_all() {
    let config = toml(
        r#"
        [app]
        app_id = "checkout"
        [pub_subs.events]
        type = "in-memory"
        [subscriptions.orders]
        pubsub_name = "events"
        topic = "orders"
        routes = { rules = [{ match = 'event.type == "big"', path = "big" }], default = "/orders" }
        dead_letter_topic = "orders-dlq"
        metadata = { rawPayload = "true" }
        [subscriptions.elsewhere]
        pubsub_name = "events"
        topic = "other"
        route = "/other"
        scopes = ["billing"]
        "#,
    )
    .expect("valid");
    assert_eq!(config.subscriptions.len(), 1, "the one scoped to billing is left out");
    let sub = &config.subscriptions[0];
    assert_eq!(
        sub.routes,
        Routes {
            rules: vec![("event.type == \"big\"".into(), "/big".into())],
            default: "/orders".into()
        }
    );
    assert_eq!(sub.dead_letter_topic.as_deref(), Some("orders-dlq"));
    assert_eq!(sub.metadata.get("rawPayload").map(String::as_str), Some("true"));

    let found = problems(
        r#"
        [subscriptions.bad]
        pubsub_name = "nowhere"
        topic = "t"
        routes = { rules = [{ match = "event.type ==", path = "/x" }] }
        [subscriptions.routeless]
        pubsub_name = "nowhere"
        topic = "t"
        "#,
    );
    for expected in [
        "subscriptions.bad.routes.rules[0].match: 'event.type ==' is not a CEL expression",
        "subscriptions.bad.pubsub_name: names pub/sub 'nowhere', which is not configured",
        "subscriptions.routeless.route: a subscription needs a route",
    ] {
        assert!(found.iter().any(|p| p.starts_with(expected)), "{expected} in {found:?}");
    }
}

fn resources(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    dir
}

const STATE_YAML: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.in-memory
  version: v1
  metadata:
  - name: actorStateStore
    value: "true"
"#;

#[test]
fn dapr_resource_files_load_as_daprd_reads_them() {
    let dir = resources(&[
        ("state.yaml", STATE_YAML),
        (
            "pubsub.yml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n---\napiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: orders\nspec:\n  pubsubname: pubsub\n  topic: orders\n  routes:\n    rules:\n    - match: event.type == \"big\"\n      path: /big\n    default: /orders\n  deadLetterTopic: dead\nscopes:\n- checkout\n",
        ),
        (
            "secrets.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: env\nspec:\n  type: secretstores.local.env\n  version: v1\n",
        ),
        (
            "lock.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: lockstore\nspec:\n  type: lock.in-memory\n  metadata:\n  - name: keyPrefix\n    secretKeyRef:\n      name: HOME\n  - name: redisPassword\n    value: x\nauth:\n  secretStore: env\n",
        ),
        (
            "resiliency.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec: {}\n",
        ),
        ("README.md", "not a resource"),
    ]);
    let loaded = load_launch(&Launch {
        config: None,
        resources: vec![dir.path().to_owned()],
        flags: vec![("app.app_id".into(), Value::String("checkout".into()))],
    })
    .expect("loads");
    let config = loaded.config;
    let state = config.components_of(Kind::State);
    assert_eq!(state.len(), 1, "only the resources: no embedded default");
    assert_eq!(state[0].type_name, "in-memory");
    assert_eq!(state[0].meta("keyPrefix"), Some("appid"), "Dapr scopes keys by app id");
    assert_eq!(config.components_of(Kind::PubSubs)[0].name, "pubsub");
    let lock = &config.components_of(Kind::Lock)[0];
    assert_eq!(lock.secret_refs.len(), 1);
    assert_eq!(
        (lock.secret_refs[0].store.as_str(), lock.secret_refs[0].secret.as_str()),
        ("env", "HOME")
    );
    assert_eq!(config.subscriptions.len(), 1);
    assert_eq!(config.subscriptions[0].dead_letter_topic.as_deref(), Some("dead"));
    assert!(
        loaded.ignored.iter().any(|l| l.contains("Resiliency 'r'")),
        "{:?}",
        loaded.ignored
    );
    assert!(
        loaded.ignored.iter().any(|l| l.contains("README.md")),
        "{:?}",
        loaded.ignored
    );
    assert!(
        loaded
            .ignored
            .iter()
            .any(|l| l.contains("metadata 'redisPassword' of lock.in-memory")),
        "{:?}",
        loaded.ignored
    );
    assert_eq!(
        state[0].meta("actorStateStore"),
        None,
        "read by daprd, not by the store"
    );

    // Another app id: the subscription scoped to checkout is left out.
    let loaded = load_launch(&Launch {
        config: None,
        resources: vec![dir.path().to_owned()],
        flags: vec![("app.app_id".into(), Value::String("billing".into()))],
    })
    .expect("loads");
    assert!(loaded.config.subscriptions.is_empty());
}

#[test]
fn a_resource_we_cannot_serve_names_its_file_and_type() {
    let dir = resources(&[
        ("a.yaml", STATE_YAML),
        ("b.yaml", STATE_YAML),
        (
            "c.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: cosmos\nspec:\n  type: state.azure.cosmosdb\n",
        ),
    ]);
    let err = load_launch(&Launch {
        config: None,
        resources: vec![dir.path().to_owned()],
        flags: Vec::new(),
    })
    .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("b.yaml: metadata.name: 'statestore' is declared twice"),
        "{text}"
    );
    assert!(
        text.contains(
            "c.yaml: spec.type: 'state.azure.cosmosdb' of component 'cosmos' is not implemented; known: state.in-memory"
        ),
        "{text}"
    );
}

#[test]
fn a_dapr_configuration_file_is_read_for_what_we_implement() {
    let dir = resources(&[(
        "config.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprConfig\nspec:\n  features:\n  - name: HotReload\n    enabled: true\n  - name: Other\n    enabled: false\n  tracing:\n    samplingRate: \"1\"\n",
    )]);
    let loaded = load_launch(&Launch {
        config: Some(dir.path().join("config.yaml")),
        resources: Vec::new(),
        flags: Vec::new(),
    })
    .expect("loads");
    assert_eq!(loaded.config.app.features, ["HotReload"]);
    assert!(
        loaded.config.components.is_empty(),
        "a Dapr Configuration declares no components"
    );
    assert!(
        loaded.ignored.iter().any(|l| l.contains("spec.tracing")),
        "{:?}",
        loaded.ignored
    );
}

#[test]
fn app_port_flag_defaults_the_protocol_to_http_unless_the_file_names_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let launch = |file: Option<&str>| {
        let config = file.map(|text| {
            let path = dir.path().join("c.toml");
            std::fs::write(&path, text).expect("write");
            path
        });
        load_launch(&Launch {
            config,
            resources: Vec::new(),
            flags: vec![
                ("app.port".into(), Value::from(3000)),
                (DEFAULT_APP_PROTOCOL.into(), Value::from("http")),
            ],
        })
        .expect("loads")
        .config
    };
    assert_eq!(launch(None).app.callback_protocol, CallbackProtocol::Http);
    let named = launch(Some("[app]\ncallback_protocol = \"dapr\"\n"));
    assert_eq!(named.app.callback_protocol, CallbackProtocol::Dapr);
    assert_eq!(named.app.grpc_callback_port, 3000);
}

#[test]
fn the_http_body_limit_takes_daprd_quantities() {
    for (text, bytes) in [
        ("4Mi", 4 << 20),
        ("512Ki", 512 << 10),
        ("10M", 10_000_000),
        ("1000", 1000),
    ] {
        let config = toml(&format!("[server]\nmax_body_size = \"{text}\"\n")).expect(text);
        assert_eq!(config.server.max_body_size, bytes, "{text}");
    }
    assert_eq!(
        toml("[server]\nmax_body_size = 2048\n")
            .expect("a number")
            .server
            .max_body_size,
        2048
    );
    for bad in ["0", "4Xi", "-1", "99999999999999999999Gi"] {
        let found = problems(&format!("[server]\nmax_body_size = \"{bad}\"\n"));
        assert!(
            found.iter().any(|p| p.starts_with("server.max_body_size:")),
            "{bad}: {found:?}"
        );
    }
}

#[test]
fn a_secret_reference_may_stand_for_a_required_key() {
    let config = toml(
        r#"
        [secret_store.env]
        type = "local.env"
        [state.r]
        type = "redis"
        metadata = { redisHost = { secretKeyRef = { name = "REDIS_HOST", store = "env" } } }
        [pub_subs.p]
        type = "rabbitmq"
        auth = { secretStore = "env" }
        metadata = { connectionString = { secretKeyRef = { name = "AMQP" } } }
        "#,
    )
    .expect("a secret may stand for a required key");
    assert_eq!(
        config.components_of(Kind::State)[0].secret_refs[0].inject_as,
        "redisHost"
    );
    assert_eq!(config.components_of(Kind::PubSubs)[0].secret_refs[0].store, "env");
}

#[test]
fn tcp_copy_is_read_with_layottos_bounds() {
    let config = toml(
        r#"
        [server.tcp_copy]
        switch = "ON"
        interval = 60
        duration = 5
        cpu_max_rate = 90
        mem_max_rate = 85.5
        dir = "/var/dump"
        queue = 10
        "#,
    )
    .expect("valid");
    assert_eq!(
        config.server.tcp_copy,
        TcpCopyConfig {
            enabled: true,
            interval: 60,
            duration: 5,
            cpu_max_rate: 90.0,
            mem_max_rate: 85.5,
            dir: Some(PathBuf::from("/var/dump")),
            queue: 10,
        }
    );
    assert_eq!(
        config.server.tcp_copy.dump_file(),
        Path::new("/var/dump/dump_tcp_copy.log")
    );
    let off = toml("").expect("valid").server.tcp_copy;
    assert_eq!((off.enabled, off.interval, off.duration), (false, 30, 1));
    assert_eq!((off.cpu_max_rate, off.mem_max_rate, off.queue), (80.0, 70.0, 1024));
    assert!(off.dump_dir().ends_with("logs/mosn/dump"));
}

#[test]
fn tcp_copy_bad_values_name_their_field() {
    let found = problems(
        r#"
        [server.tcp_copy]
        switch = "MAYBE"
        interval = 10
        duration = 10
        cpu_max_rate = 100
        mem_max_rate = 0
        dir = ""
        queue = 0
        color = "red"
        "#,
    );
    for field in [
        "switch",
        "interval",
        "duration",
        "cpu_max_rate",
        "mem_max_rate",
        "dir",
        "queue",
        "color",
    ] {
        let path = format!("server.tcp_copy.{field}");
        assert!(found.iter().any(|p| p.contains(&path)), "{path} not in {found:?}");
    }
    let found = problems("[server.tcp_copy]\ninterval = 3601\n");
    assert!(
        found.iter().any(|p| p.contains("server.tcp_copy.interval")),
        "{found:?}"
    );
    let found = problems("[server.tcp_copy]\ninterval = 30\nduration = 31\n");
    assert!(
        found.iter().any(|p| p.contains("server.tcp_copy.duration")),
        "{found:?}"
    );
}

#[test]
fn tcp_copy_comes_from_layottos_tcpcopy_filter() {
    let json = r#"{"servers":[{"listeners":[{"name":"grpc","address":"127.0.0.1:34904","bind_port":true,
        "filter_chains":[{"filters":[
            {"type":"tcpcopy","config":{"strategy":{"switch":"ON","interval":30,"duration":10,"cpu_max_rate":80,"mem_max_rate":80}}},
            {"type":"grpc","config":{"server_name":"runtime","grpc_config":{"hellos":{"helloworld":{"type":"helloworld"}}}}}
        ]}]}]}]}"#;
    let config = load_str(json, Format::Json, "config.json", Some(BTreeMap::new())).expect("valid");
    let t = &config.server.tcp_copy;
    assert_eq!((t.enabled, t.interval, t.duration), (true, 30, 10));
    assert_eq!((t.cpu_max_rate, t.mem_max_rate, t.dir.clone()), (80.0, 80.0, None));

    let bad = json.replace("\"duration\":10", "\"duration\":30");
    let e = load_str(&bad, Format::Json, "config.json", Some(BTreeMap::new())).expect_err("duration = interval");
    let found: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
    assert!(
        found.iter().any(|p| p.contains("server.tcp_copy.duration")),
        "{found:?}"
    );

    let unknown = json.replace("\"switch\"", "\"swich\"");
    let e = load_str(&unknown, Format::Json, "config.json", Some(BTreeMap::new())).expect_err("unknown key");
    let found: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
    assert!(found.iter().any(|p| p.contains("strategy.swich")), "{found:?}");
}
