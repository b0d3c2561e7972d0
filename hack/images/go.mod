module modeldepot.dev/images

go 1.22
