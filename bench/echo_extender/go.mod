module harbinger.io/bench/echoextender

go 1.26
