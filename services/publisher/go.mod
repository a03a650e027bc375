module github.com/outboxtodo/outboxtodo/services/publisher

go 1.26.8
