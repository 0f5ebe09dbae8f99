
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'streamctl' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'streamctl'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'streamctl' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the daemon (zero config: embedded broker on 127.0.0.1:8080 with a local key)')
            [CompletionResult]::new('start', 'start', [CompletionResultType]::ParameterValue, 'Open a stream and print its id')
            [CompletionResult]::new('send', 'send', [CompletionResultType]::ParameterValue, 'Send stdin lines into a stream, one record per line')
            [CompletionResult]::new('tail', 'tail', [CompletionResultType]::ParameterValue, 'Print a stream''s results as they arrive')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Measure the whole path, open loop: latency percentiles, rates, and every record accounted for')
            [CompletionResult]::new('top', 'top', [CompletionResultType]::ParameterValue, 'Live view of the daemon''s streams: rates, subscribers, latency, a stream''s results')
            [CompletionResult]::new('streams', 'streams', [CompletionResultType]::ParameterValue, 'List, show or end streams')
            [CompletionResult]::new('token', 'token', [CompletionResultType]::ParameterValue, 'Print a scoped token for one stream (subscribe and/or send), to use instead of the key')
            [CompletionResult]::new('version', 'version', [CompletionResultType]::ParameterValue, 'Print this client''s version and the daemon''s')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Print a man page (roff): streamctl''s, or a subcommand''s (streamctl man tail)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'streamctl;serve' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'YAML config file (see config.example.yaml); without it, built-in defaults')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'YAML config file (see config.example.yaml); without it, built-in defaults')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Address to listen on [default: 127.0.0.1:8080]')
            [CompletionResult]::new('--brokers', '--brokers', [CompletionResultType]::ParameterName, '`embedded` or HOST:PORT[,HOST:PORT...] [default: embedded]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'Accept this API key (repeatable); adds to the keys of the config file')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format [default: pretty; from the config file if it sets log.format]')
            [CompletionResult]::new('--check', '--check', [CompletionResultType]::ParameterName, 'Check the config (file, flags, key, TLS certificates, a JWKS file) and exit: 0 when valid, 1 with the reason; a dry run of a start or a reload')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;start' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Daemon URL')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the key file written by `streamctl serve`]')
            [CompletionResult]::new('--cacert', '--cacert', [CompletionResultType]::ParameterName, 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Processor: a name (identity, uppercase) or a JSON spec such as ''{"type":"uppercase"}''')
            [CompletionResult]::new('--processor', '--processor', [CompletionResultType]::ParameterName, 'Processor: a name (identity, uppercase) or a JSON spec such as ''{"type":"uppercase"}''')
            [CompletionResult]::new('--schema', '--schema', [CompletionResultType]::ParameterName, 'A JSON Schema file every record must match (checked before anything is stored), or `ref:NAME` for a schema named in the daemon''s config')
            [CompletionResult]::new('--result-schema', '--result-schema', [CompletionResultType]::ParameterName, 'A JSON Schema file every result must match (one that does not becomes an error frame)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the daemon''s whole JSON answer instead of the id')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;send' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Daemon URL')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the key file written by `streamctl serve`]')
            [CompletionResult]::new('--cacert', '--cacert', [CompletionResultType]::ParameterName, 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)')
            [CompletionResult]::new('--processor', '--processor', [CompletionResultType]::ParameterName, 'Processor of the new stream (with --new)')
            [CompletionResult]::new('--batch-bytes', '--batch-bytes', [CompletionResultType]::ParameterName, 'Largest NDJSON request body; keep it under the daemon''s limits.max_body_bytes')
            [CompletionResult]::new('--batch-records', '--batch-records', [CompletionResultType]::ParameterName, 'Most lines in one request; keep it under the daemon''s limits.max_records_per_request')
            [CompletionResult]::new('--connect-timeout', '--connect-timeout', [CompletionResultType]::ParameterName, 'Give up (exit 1) when the daemon cannot be reached for this long, e.g. 30s, 5m')
            [CompletionResult]::new('--idempotency-prefix', '--idempotency-prefix', [CompletionResultType]::ParameterName, 'Start of each batch''s idempotency key (`PREFIX-FIRST-LAST`, its stdin line numbers); given, batches are cut by size only (not by timing), so running the same input again with the same prefix stores nothing twice [default: a random one per run]')
            [CompletionResult]::new('--traceparent', '--traceparent', [CompletionResultType]::ParameterName, 'W3C trace context (`00-TRACE_ID-SPAN_ID-01`) the records are sent under: with the daemon''s `telemetry` on, their trace goes on through processing to the result frames (`tail --format ''{trace_id} {data}''`)')
            [CompletionResult]::new('--new', '--new', [CompletionResultType]::ParameterName, 'Start a new stream first and print its id on stdout')
            [CompletionResult]::new('--strict', '--strict', [CompletionResultType]::ParameterName, 'Refuse lines that are not valid JSON instead of sending them as strings')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;tail' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Daemon URL')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the key file written by `streamctl serve`]')
            [CompletionResult]::new('--cacert', '--cacert', [CompletionResultType]::ParameterName, 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'json (whole frames), data (only the data; with several streams, the stream id, a tab, then the data), or a template with placeholders {data}, {cursor}, {input_offset}, {input_partition}, {received_ms}, {processed_ms}, {stream_id}, {type}, {idempotency_key}, {traceparent}, {trace_id} (of a traced record''s result) and the escapes \n and \t; each result ends with one newline')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'json (whole frames), data (only the data; with several streams, the stream id, a tab, then the data), or a template with placeholders {data}, {cursor}, {input_offset}, {input_partition}, {received_ms}, {processed_ms}, {stream_id}, {type}, {idempotency_key}, {traceparent}, {trace_id} (of a traced record''s result) and the escapes \n and \t; each result ends with one newline')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Where to start: earliest, latest, a cursor (inclusive), or -N for the last N results. kcat''s words work too: `-o beginning`, `-o end`, `-o -10`')
            [CompletionResult]::new('--from', '--from', [CompletionResultType]::ParameterName, 'Where to start: earliest, latest, a cursor (inclusive), or -N for the last N results. kcat''s words work too: `-o beginning`, `-o end`, `-o -10`')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Exit after printing this many results')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'Exit after printing this many results')
            [CompletionResult]::new('-e', '-e', [CompletionResultType]::ParameterName, 'Exit after the results that exist now (kcat''s -e), or at the stream''s end frame if that comes first; without it, tail follows live results')
            [CompletionResult]::new('--exit-on-end', '--exit-on-end', [CompletionResultType]::ParameterName, 'Exit after the results that exist now (kcat''s -e), or at the stream''s end frame if that comes first; without it, tail follows live results')
            [CompletionResult]::new('--no-gaps', '--no-gaps', [CompletionResultType]::ParameterName, 'Exit 1 at the first gap (results the broker no longer holds, so they cannot be printed) instead of warning and going on')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;bench' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Daemon URL')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the key file written by `streamctl serve`]')
            [CompletionResult]::new('--cacert', '--cacert', [CompletionResultType]::ParameterName, 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)')
            [CompletionResult]::new('--streams', '--streams', [CompletionResultType]::ParameterName, 'Streams to open, each with one WebSocket subscriber')
            [CompletionResult]::new('--rate', '--rate', [CompletionResultType]::ParameterName, 'Records per second, all streams together (open loop: sent on schedule regardless of how fast the daemon answers)')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'How long to send, e.g. 30s, 2m')
            [CompletionResult]::new('--payload-bytes', '--payload-bytes', [CompletionResultType]::ParameterName, 'Size of each JSON record')
            [CompletionResult]::new('--transport', '--transport', [CompletionResultType]::ParameterName, 'How records are sent: http (NDJSON requests) or ws (frames on the subscriber sockets)')
            [CompletionResult]::new('--processor', '--processor', [CompletionResultType]::ParameterName, 'The bench streams'' processor, as for `streamctl start` (a name or a JSON spec); it must keep the record''s `q` field (e.g. `{"type":"jq","filter":". + {seen: true}"}`), which matches results to records. Default: identity')
            [CompletionResult]::new('--subscribers', '--subscribers', [CompletionResultType]::ParameterName, 'Results subscribers (WebSockets) per stream: measures fan-out. Each record is then expected once on every one of them')
            [CompletionResult]::new('--source-addresses', '--source-addresses', [CompletionResultType]::ParameterName, 'Spread the results sockets over this many loopback source addresses (127.0.0.1 to 127.0.0.N), for more sockets than one client address may hold (a quarter of the daemon''s `limits.max_connections`). For a daemon on this machine')
            [CompletionResult]::new('--mux', '--mux', [CompletionResultType]::ParameterName, 'Follow the streams over `/api/connect`, this many streams per connection, instead of one WebSocket per stream (with --transport http and one subscriber per stream)')
            [CompletionResult]::new('--traced', '--traced', [CompletionResultType]::ParameterName, 'Share of HTTP requests (0 to 1) sent with a sampled `traceparent` of their own: with the daemon''s `telemetry` on, what tracing costs (compare a run at 0 with one at 1)')
            [CompletionResult]::new('--batch', '--batch', [CompletionResultType]::ParameterName, 'Records per HTTP request (or per burst of WebSocket frames)')
            [CompletionResult]::new('--max-in-flight', '--max-in-flight', [CompletionResultType]::ParameterName, 'HTTP requests awaiting their answer at once; beyond it, sends queue (and their latency, counted from the schedule, grows)')
            [CompletionResult]::new('--drain-timeout', '--drain-timeout', [CompletionResultType]::ParameterName, 'After sending, how long to wait for acknowledged records still on their way')
            [CompletionResult]::new('--brokers', '--brokers', [CompletionResultType]::ParameterName, 'The daemon''s broker, for --baseline against --url (HOST:PORT[,...])')
            [CompletionResult]::new('--baseline-partitions', '--baseline-partitions', [CompletionResultType]::ParameterName, 'Partitions of the baseline''s topic, if it must be created (the daemon''s default is 12)')
            [CompletionResult]::new('--baseline-kafka', '--baseline-kafka', [CompletionResultType]::ParameterName, 'A librdkafka setting for the baseline''s clients (repeatable). Give it the daemon''s `kafka` settings for a like-for-like comparison')
            [CompletionResult]::new('--max-p99-ms', '--max-p99-ms', [CompletionResultType]::ParameterName, 'With --find-max: the end-to-end p99 (ms) a rate must keep to count as sustainable')
            [CompletionResult]::new('--step', '--step', [CompletionResultType]::ParameterName, 'With --find-max: factor from one rate to the next')
            [CompletionResult]::new('--broker-pid', '--broker-pid', [CompletionResultType]::ParameterName, 'The broker''s process id, when it runs on this machine: its CPU per 1 000 records is reported beside the daemon''s')
            [CompletionResult]::new('--fault-drop-every', '--fault-drop-every', [CompletionResultType]::ParameterName, 'Test-only fault: ignore every Nth result frame, as if it never arrived')
            [CompletionResult]::new('--embedded', '--embedded', [CompletionResultType]::ParameterName, 'Start a daemon in this process on the embedded broker instead of using --url')
            [CompletionResult]::new('--idempotency', '--idempotency', [CompletionResultType]::ParameterName, 'Send every HTTP request with an `Idempotency-Key` of its own (what the client libraries do): measures what the key costs')
            [CompletionResult]::new('--baseline', '--baseline', [CompletionResultType]::ParameterName, 'First run the same load with rdkafka straight on the broker, for comparison; with --subscribers above 1, through a raw WebSocket broadcaster in this process instead (no Kafka), and report the ratio of deliveries/s within --max-p99-ms (`fan_out`)')
            [CompletionResult]::new('--find-max', '--find-max', [CompletionResultType]::ParameterName, 'Step the rate up from --rate until a bound breaks; report the highest that held')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the report as JSON (fields documented in docs/benchmarks.md)')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No live progress line (it is only drawn when stderr is a terminal anyway)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;top' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Daemon URL')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the key file written by `streamctl serve`]')
            [CompletionResult]::new('--cacert', '--cacert', [CompletionResultType]::ParameterName, 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'Time between snapshots, e.g. 1s, 500ms')
            [CompletionResult]::new('--once', '--once', [CompletionResultType]::ParameterName, 'Print one plain-text snapshot and exit (also what happens when stdout is not a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'With --once (or when stdout is not a terminal): print the daemon''s stats as JSON (`GET /api/stats`) instead of text')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;streams' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Daemon URL')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the key file written by `streamctl serve`]')
            [CompletionResult]::new('--cacert', '--cacert', [CompletionResultType]::ParameterName, 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print stream ids only, one per line (for scripts: `streamctl streams -q | xargs ...`)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print stream ids only, one per line (for scripts: `streamctl streams -q | xargs ...`)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your streams (all streams for an admin key), newest first (the default)')
            [CompletionResult]::new('info', 'info', [CompletionResultType]::ParameterValue, 'Show one stream: owner, processor, state, counters')
            [CompletionResult]::new('end', 'end', [CompletionResultType]::ParameterValue, 'End a stream: later sends are refused, subscribers get an end frame')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'streamctl;streams;list' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;streams;info' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;streams;end' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;streams;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your streams (all streams for an admin key), newest first (the default)')
            [CompletionResult]::new('info', 'info', [CompletionResultType]::ParameterValue, 'Show one stream: owner, processor, state, counters')
            [CompletionResult]::new('end', 'end', [CompletionResultType]::ParameterValue, 'End a stream: later sends are refused, subscribers get an end frame')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'streamctl;streams;help;list' {
            break
        }
        'streamctl;streams;help;info' {
            break
        }
        'streamctl;streams;help;end' {
            break
        }
        'streamctl;streams;help;help' {
            break
        }
        'streamctl;token' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Daemon URL')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the key file written by `streamctl serve`]')
            [CompletionResult]::new('--cacert', '--cacert', [CompletionResultType]::ParameterName, 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)')
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'What the token may do; repeat or separate with commas for both')
            [CompletionResult]::new('--scope', '--scope', [CompletionResultType]::ParameterName, 'What the token may do; repeat or separate with commas for both')
            [CompletionResult]::new('--ttl', '--ttl', [CompletionResultType]::ParameterName, 'Lifetime in seconds (the daemon caps it at limits.max_token_ttl_s)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the daemon''s whole JSON answer (with `expires_at`) instead of the token')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;version' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Daemon URL')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the key file written by `streamctl serve`]')
            [CompletionResult]::new('--cacert', '--cacert', [CompletionResultType]::ParameterName, 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;completions' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;man' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the daemon (zero config: embedded broker on 127.0.0.1:8080 with a local key)')
            [CompletionResult]::new('start', 'start', [CompletionResultType]::ParameterValue, 'Open a stream and print its id')
            [CompletionResult]::new('send', 'send', [CompletionResultType]::ParameterValue, 'Send stdin lines into a stream, one record per line')
            [CompletionResult]::new('tail', 'tail', [CompletionResultType]::ParameterValue, 'Print a stream''s results as they arrive')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Measure the whole path, open loop: latency percentiles, rates, and every record accounted for')
            [CompletionResult]::new('top', 'top', [CompletionResultType]::ParameterValue, 'Live view of the daemon''s streams: rates, subscribers, latency, a stream''s results')
            [CompletionResult]::new('streams', 'streams', [CompletionResultType]::ParameterValue, 'List, show or end streams')
            [CompletionResult]::new('token', 'token', [CompletionResultType]::ParameterValue, 'Print a scoped token for one stream (subscribe and/or send), to use instead of the key')
            [CompletionResult]::new('version', 'version', [CompletionResultType]::ParameterValue, 'Print this client''s version and the daemon''s')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Print a man page (roff): streamctl''s, or a subcommand''s (streamctl man tail)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'streamctl;help;serve' {
            break
        }
        'streamctl;help;start' {
            break
        }
        'streamctl;help;send' {
            break
        }
        'streamctl;help;tail' {
            break
        }
        'streamctl;help;bench' {
            break
        }
        'streamctl;help;top' {
            break
        }
        'streamctl;help;streams' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your streams (all streams for an admin key), newest first (the default)')
            [CompletionResult]::new('info', 'info', [CompletionResultType]::ParameterValue, 'Show one stream: owner, processor, state, counters')
            [CompletionResult]::new('end', 'end', [CompletionResultType]::ParameterValue, 'End a stream: later sends are refused, subscribers get an end frame')
            break
        }
        'streamctl;help;streams;list' {
            break
        }
        'streamctl;help;streams;info' {
            break
        }
        'streamctl;help;streams;end' {
            break
        }
        'streamctl;help;token' {
            break
        }
        'streamctl;help;version' {
            break
        }
        'streamctl;help;completions' {
            break
        }
        'streamctl;help;man' {
            break
        }
        'streamctl;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
