version 1.1

# The quickstart example (examples/run-example.sh): one tool task per name. The tool reads its
# inputs from the environment contract and uploads results.json through the tool runtime; the
# plugin reads it back, verifies it and hands it to the outputs as omnibio_result.json.
workflow hello_results {
    input {
        File names
    }
    scatter (name in read_lines(names)) {
        call greet { input: name }
    }
    output {
        Array[String] greetings = greet.greeting
    }
}

task greet {
    input {
        String name
    }
    command <<<
        python3 - <<'PY'
        from miniwdl_omnibio.runtime import read_contract, write_result
        contract = read_contract()
        write_result({"greeting": "Hello, " + contract.inputs["name"] + "!"})
        PY
    >>>
    output {
        File result = "omnibio_result.json"
        String greeting = read_json("omnibio_result.json")["results"]["greeting"]
    }
    runtime {
        docker: "omnibio/runtime:latest"
        cpu: 1
        memory: "256 MiB"
    }
}
