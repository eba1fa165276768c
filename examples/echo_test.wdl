version 1.1

# The reference tool of the OmniBioAI tool runtime: it echoes its contract into results.json,
# which the plugin verifies and hands to the outputs as omnibio_result.json.
task echo_test {
    input {
        File reads
        String sample
    }
    command <<<
        python3 -m miniwdl_omnibio.runtime.echo_test
    >>>
    output {
        File result = "omnibio_result.json"
        Map[String, String] inputs_seen = read_json("omnibio_result.json")["results"]["echo"]
    }
    runtime {
        docker: "omnibio/runtime:latest"
        cpu: 1
        memory: "256 MiB"
    }
}
