module github.com/harbinger-io/harbinger/hack/nodeimages

go 1.26.0
