# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_roomguard_global_optspecs
    string join \n log= log-format= h/help V/version
end

function __fish_roomguard_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_roomguard_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_roomguard_using_subcommand
    set -l cmd (__fish_roomguard_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c roomguard -n "__fish_roomguard_needs_command" -l log -d 'Log filter (tracing directives, e.g. `info`, `roomguard=debug,warn`) [default: the config\'s `controller.log` for `run`, else `info`]' -r
complete -c roomguard -n "__fish_roomguard_needs_command" -l log-format -d 'Log format' -r -f -a "plain\t''
json\t''"
complete -c roomguard -n "__fish_roomguard_needs_command" -s h -l help -d 'Print help'
complete -c roomguard -n "__fish_roomguard_needs_command" -s V -l version -d 'Print version'
complete -c roomguard -n "__fish_roomguard_needs_command" -f -a "run" -d 'Run the controller (the service)'
complete -c roomguard -n "__fish_roomguard_needs_command" -f -a "status" -d 'Probe every instance once and print the topology and a verdict'
complete -c roomguard -n "__fish_roomguard_needs_command" -f -a "failover" -d 'Make ROOM primary: graceful when the current masters answer, forced when they do not'
complete -c roomguard -n "__fish_roomguard_needs_command" -f -a "pause" -d 'Maintenance mode: turn automatic failover off until `resume`'
complete -c roomguard -n "__fish_roomguard_needs_command" -f -a "resume" -d 'End maintenance mode: automatic failover on again'
complete -c roomguard -n "__fish_roomguard_needs_command" -f -a "check-config" -d 'Validate the configuration and print the derived chains'
complete -c roomguard -n "__fish_roomguard_needs_command" -f -a "completions" -d 'Print a shell completion script (the package installs bash, zsh and fish ones)'
complete -c roomguard -n "__fish_roomguard_needs_command" -f -a "man" -d 'Print the man page (roff), or write every page (roomguard.1, roomguard-pause.1, ...) to a directory; the package installs them'
complete -c roomguard -n "__fish_roomguard_needs_command" -f -a "lab" -d 'Start the seed\'s eight Redis instances locally and run the controller against them'
complete -c roomguard -n "__fish_roomguard_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c roomguard -n "__fish_roomguard_using_subcommand run" -s c -l config -d 'The controller configuration [default: ./controller.toml when it exists, else /etc/roomguard/controller.toml (the package\'s, which the service uses)]' -r -F
complete -c roomguard -n "__fish_roomguard_using_subcommand run" -l log -d 'Log filter (tracing directives, e.g. `info`, `roomguard=debug,warn`) [default: the config\'s `controller.log` for `run`, else `info`]' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand run" -l log-format -d 'Log format' -r -f -a "plain\t''
json\t''"
complete -c roomguard -n "__fish_roomguard_using_subcommand run" -s h -l help -d 'Print help'
complete -c roomguard -n "__fish_roomguard_using_subcommand status" -s c -l config -d 'The controller configuration [default: ./controller.toml when it exists, else /etc/roomguard/controller.toml (the package\'s, which the service uses)]' -r -F
complete -c roomguard -n "__fish_roomguard_using_subcommand status" -l log -d 'Log filter (tracing directives, e.g. `info`, `roomguard=debug,warn`) [default: the config\'s `controller.log` for `run`, else `info`]' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand status" -l log-format -d 'Log format' -r -f -a "plain\t''
json\t''"
complete -c roomguard -n "__fish_roomguard_using_subcommand status" -l json -d 'Print JSON (the same document as GET /topology)'
complete -c roomguard -n "__fish_roomguard_using_subcommand status" -s h -l help -d 'Print help'
complete -c roomguard -n "__fish_roomguard_using_subcommand failover" -s c -l config -d 'The controller configuration [default: ./controller.toml when it exists, else /etc/roomguard/controller.toml (the package\'s, which the service uses)]' -r -F
complete -c roomguard -n "__fish_roomguard_using_subcommand failover" -l room -d 'The room to make primary' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand failover" -l via -d 'Ask the controller at URL (`http://host:port` of its `[http] listen`; without URL, the configured `[http] listen`) to do it instead of acting on Redis from here. Without --via or --direct, a controller that answers on the configured `[http] listen` does it when its admin token is known (the config\'s `[http] admin_token`, --token); otherwise this process acts' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand failover" -l token -d 'The controller\'s `[http] admin_token` (for --via; with --via alone or by default, the config\'s when not given)' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand failover" -l log -d 'Log filter (tracing directives, e.g. `info`, `roomguard=debug,warn`) [default: the config\'s `controller.log` for `run`, else `info`]' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand failover" -l log-format -d 'Log format' -r -f -a "plain\t''
json\t''"
complete -c roomguard -n "__fish_roomguard_using_subcommand failover" -l force -d 'Promote even when room ROOM\'s heads still hear the old masters (this host may be cut off rather than the old room down)'
complete -c roomguard -n "__fish_roomguard_using_subcommand failover" -l direct -d 'Act on Redis from this process even when a controller answers on the configured `[http] listen` (it then waits, at most 2 s, for this host\'s Sentinel endpoint to name the new masters before closing the old masters\' clients)'
complete -c roomguard -n "__fish_roomguard_using_subcommand failover" -s h -l help -d 'Print help'
complete -c roomguard -n "__fish_roomguard_using_subcommand pause" -s c -l config -d 'The controller configuration [default: ./controller.toml when it exists, else /etc/roomguard/controller.toml (the package\'s, which the service uses)]' -r -F
complete -c roomguard -n "__fish_roomguard_using_subcommand pause" -l reason -d 'Why (shown by `status`, the status page and the controllers\' logs)' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand pause" -l via -d 'Ask a running controller to do it (`http://host:port` of its `[http] listen`) instead of writing the pause file from here' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand pause" -l token -d 'The controller\'s `[http] admin_token` (for --via)' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand pause" -l log -d 'Log filter (tracing directives, e.g. `info`, `roomguard=debug,warn`) [default: the config\'s `controller.log` for `run`, else `info`]' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand pause" -l log-format -d 'Log format' -r -f -a "plain\t''
json\t''"
complete -c roomguard -n "__fish_roomguard_using_subcommand pause" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c roomguard -n "__fish_roomguard_using_subcommand resume" -s c -l config -d 'The controller configuration [default: ./controller.toml when it exists, else /etc/roomguard/controller.toml (the package\'s, which the service uses)]' -r -F
complete -c roomguard -n "__fish_roomguard_using_subcommand resume" -l via -d 'Ask a running controller to do it (`http://host:port` of its `[http] listen`) instead of writing the pause file from here' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand resume" -l token -d 'The controller\'s `[http] admin_token` (for --via)' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand resume" -l log -d 'Log filter (tracing directives, e.g. `info`, `roomguard=debug,warn`) [default: the config\'s `controller.log` for `run`, else `info`]' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand resume" -l log-format -d 'Log format' -r -f -a "plain\t''
json\t''"
complete -c roomguard -n "__fish_roomguard_using_subcommand resume" -s h -l help -d 'Print help'
complete -c roomguard -n "__fish_roomguard_using_subcommand check-config" -s c -l config -d 'The controller configuration [default: ./controller.toml when it exists, else /etc/roomguard/controller.toml (the package\'s, which the service uses)]' -r -F
complete -c roomguard -n "__fish_roomguard_using_subcommand check-config" -l log -d 'Log filter (tracing directives, e.g. `info`, `roomguard=debug,warn`) [default: the config\'s `controller.log` for `run`, else `info`]' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand check-config" -l log-format -d 'Log format' -r -f -a "plain\t''
json\t''"
complete -c roomguard -n "__fish_roomguard_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c roomguard -n "__fish_roomguard_using_subcommand completions" -l log -d 'Log filter (tracing directives, e.g. `info`, `roomguard=debug,warn`) [default: the config\'s `controller.log` for `run`, else `info`]' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand completions" -l log-format -d 'Log format' -r -f -a "plain\t''
json\t''"
complete -c roomguard -n "__fish_roomguard_using_subcommand completions" -s h -l help -d 'Print help'
complete -c roomguard -n "__fish_roomguard_using_subcommand man" -l out-dir -d 'Write roomguard.1 and a page per subcommand here instead of printing roomguard.1' -r -F
complete -c roomguard -n "__fish_roomguard_using_subcommand man" -l log -d 'Log filter (tracing directives, e.g. `info`, `roomguard=debug,warn`) [default: the config\'s `controller.log` for `run`, else `info`]' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand man" -l log-format -d 'Log format' -r -f -a "plain\t''
json\t''"
complete -c roomguard -n "__fish_roomguard_using_subcommand man" -s h -l help -d 'Print help'
complete -c roomguard -n "__fish_roomguard_using_subcommand lab" -l base-port -d 'Ports are BASE+1..=BASE+4 on 127.0.0.11 (room 1) and 127.0.0.12 (room 2)' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand lab" -l http -d 'Where the lab controller\'s HTTP server listens' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand lab" -l sentinel -d 'Also serve the Sentinel-compatible endpoint here (e.g. 127.0.0.1:26379)' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand lab" -l duration -d 'Exit after this long (default: run until Ctrl-C or `quit`)' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand lab" -l redis-server -d 'The redis-server binary to run (Redis 2.8 to 7.x, or Valkey 8; default: redis-server on PATH, else valkey-server). `scripts/servers` builds one per supported version' -r -F
complete -c roomguard -n "__fish_roomguard_using_subcommand lab" -l log -d 'Log filter (tracing directives, e.g. `info`, `roomguard=debug,warn`) [default: the config\'s `controller.log` for `run`, else `info`]' -r
complete -c roomguard -n "__fish_roomguard_using_subcommand lab" -l log-format -d 'Log format' -r -f -a "plain\t''
json\t''"
complete -c roomguard -n "__fish_roomguard_using_subcommand lab" -s h -l help -d 'Print help'
complete -c roomguard -n "__fish_roomguard_using_subcommand help; and not __fish_seen_subcommand_from run status failover pause resume check-config completions man lab help" -f -a "run" -d 'Run the controller (the service)'
complete -c roomguard -n "__fish_roomguard_using_subcommand help; and not __fish_seen_subcommand_from run status failover pause resume check-config completions man lab help" -f -a "status" -d 'Probe every instance once and print the topology and a verdict'
complete -c roomguard -n "__fish_roomguard_using_subcommand help; and not __fish_seen_subcommand_from run status failover pause resume check-config completions man lab help" -f -a "failover" -d 'Make ROOM primary: graceful when the current masters answer, forced when they do not'
complete -c roomguard -n "__fish_roomguard_using_subcommand help; and not __fish_seen_subcommand_from run status failover pause resume check-config completions man lab help" -f -a "pause" -d 'Maintenance mode: turn automatic failover off until `resume`'
complete -c roomguard -n "__fish_roomguard_using_subcommand help; and not __fish_seen_subcommand_from run status failover pause resume check-config completions man lab help" -f -a "resume" -d 'End maintenance mode: automatic failover on again'
complete -c roomguard -n "__fish_roomguard_using_subcommand help; and not __fish_seen_subcommand_from run status failover pause resume check-config completions man lab help" -f -a "check-config" -d 'Validate the configuration and print the derived chains'
complete -c roomguard -n "__fish_roomguard_using_subcommand help; and not __fish_seen_subcommand_from run status failover pause resume check-config completions man lab help" -f -a "completions" -d 'Print a shell completion script (the package installs bash, zsh and fish ones)'
complete -c roomguard -n "__fish_roomguard_using_subcommand help; and not __fish_seen_subcommand_from run status failover pause resume check-config completions man lab help" -f -a "man" -d 'Print the man page (roff), or write every page (roomguard.1, roomguard-pause.1, ...) to a directory; the package installs them'
complete -c roomguard -n "__fish_roomguard_using_subcommand help; and not __fish_seen_subcommand_from run status failover pause resume check-config completions man lab help" -f -a "lab" -d 'Start the seed\'s eight Redis instances locally and run the controller against them'
complete -c roomguard -n "__fish_roomguard_using_subcommand help; and not __fish_seen_subcommand_from run status failover pause resume check-config completions man lab help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
