version 1.2

# Say hello to everyone listed in a file, one container per name.
workflow hello {
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
        env String name
    }
    command <<<
        echo "Hello, $name! (tool $TOOL_ID, run $RUN_ID)"
    >>>
    output {
        String greeting = read_string(stdout())
    }
    requirements {
        container: "ubuntu:22.04"
        cpu: 1
        memory: "256 MiB"
    }
}
