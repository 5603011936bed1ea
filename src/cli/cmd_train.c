// inception train: train an Inception network (classification, or R-CNN-style regions for detection).
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "train.h"

static const char *USAGE =
    "usage: inception train --config C --data LIST --classes N --epochs E --seed S --out DIR [options]\n"
    "       mpirun -n P inception train ... : P processes share each batch of --batch images (synchronous data\n"
    "                     parallelism: gradients summed in rank order, batch normalisation over the whole batch;\n"
    "                     rank 0 writes the log, checkpoints and model; --threads is per process)\n"
    "\n"
    "Trains the network of a config (Sections 5 and 6 of the paper): the main loss plus 0.3 x each auxiliary\n"
    "head's, SGD with momentum 0.9, Polyak averaging (the averaged weights are the ones saved for inference),\n"
    "random crops of 8%-100% of the area with aspect ratio in [3/4, 4/3], photometric distortions, random\n"
    "interpolation, flips. Two recipes (--recipe), each flag after it overriding one of its settings:\n"
    "  scratch (default)  for small sets trained from scratch: a warm-up of one epoch, then the rate follows half\n"
    "                     a cosine down to 0 over the run; rate 0.1 with batch normalisation (configs/*-bn.cfg),\n"
    "                     else 0.01; box regression fitted at the end of region runs (results/training.md\n"
    "                     measures what each part adds)\n"
    "  paper              the paper's exactly: the rate decreased by 4% every 8 epochs, R-CNN's sampling, no box\n"
    "                     regression\n"
    "\n"
    "data (--data and --val):\n"
    "  a file of 'path label' lines       classification (paths relative to the file, labels 0..N-1)\n"
    "  a directory of class folders       classification (classes in name order)\n"
    "  ROOT/ImageSets/Main/LIST.txt, or   detection regions, R-CNN style: proposals (Selective Search, the\n"
    "  a VOC-layout ROOT directory        detector's setting) with IoU >= 0.5 to an object are positives of its\n"
    "                                     class, the rest background (class 0); batches of 1/4 positives; each\n"
    "                                     region warped to the input with --context pixels of context.\n"
    "                                     N = object classes + 1. Validation: region accuracy and detection mAP.\n"
    "\n"
    "  --config C            network config (configs/googlenet.cfg, configs/googlenet-quarter-bn.cfg, ...)\n"
    "  --data LIST           training set\n"
    "  --val LIST            validation set, evaluated at the end of each epoch (top-1/top-5, or region\n"
    "                        accuracy and mAP)\n"
    "  --classes N           number of network outputs\n"
    "  --epochs E            epochs (default 1)\n"
    "  --steps K             stop after K steps in all instead\n"
    "  --seed S              seed of everything random: initial weights, data order, augmentation, dropout\n"
    "  --out DIR             log.csv, checkpoint.bin, model.safetensors (the averaged weights), proposals-*.json\n"
    "  --init W              start from these weights (safetensors; every tensor must fit the config)\n"
    "  --finetune W          start from these weights with new classifier layers: tensors whose shape differs\n"
    "                        (a different number of classes) start afresh\n"
    "  --resume              continue from DIR/checkpoint.bin (exactly: same batches, same result)\n"
    "  --batch B             images a step (default 32; regions: 128 as R-CNN)\n"
    "  --recipe R            scratch or paper (above)\n"
    "  --lr X                learning rate (scratch: 0.1 for a config with batchnorm = true, else 0.01;\n"
    "                        paper: 0.01)\n"
    "  --schedule S          cosine (scratch) or step (paper)\n"
    "  --warmup E            epochs of linear warm-up from lr/100 (scratch: 1; paper: 0)\n"
    "  --momentum X          (default 0.9)\n"
    "  --weight-decay X      on weights, not biases (default 0.0002)\n"
    "  --lr-step-epochs X    step schedule: decrease the rate every X epochs (default 8) ...\n"
    "  --lr-factor X         ... by this factor (default 0.96)\n"
    "  --polyak X            decay of the weights' moving average (default 0.999; 0 disables)\n"
    "  --aux-weight X        loss weight of each auxiliary head (default 0.3)\n"
    "  --no-augment          no crops or distortions (regions: no flips)\n"
    "  --crop-area-min X     classification: the smallest random crop, a share of the image (default 0.08)\n"
    "  --context P           regions: context pixels at the input size (default 16)\n"
    "  --pos-fraction X      regions: share of positive regions in a batch (default 0.25: R-CNN's 32 of 128)\n"
    "  --hard-fraction X     regions: share of the background drawn from windows that overlap an object by\n"
    "                        IoU 0.1 to --pos-iou (hard background; default 0: drawn with the rest)\n"
    "  --jitter X            regions: move each region by up to X of its size and scale each side by up to\n"
    "                        e^X, where its label stays the same (default 0)\n"
    "  --pos-iou X           regions: IoU with an object that makes a proposal a positive (default 0.5)\n"
    "  --proposals FILE      regions: the training images' proposals (inception proposals JSON); default:\n"
    "                        computed once and kept in DIR/proposals-train.json\n"
    "  --val-proposals FILE  the same for --val\n"
    "  --no-bbox-reg         regions: do not fit the box regressor at the end. By default R-CNN's class-specific\n"
    "                        bounding-box regression (beyond the paper) is fitted on the final weights: training\n"
    "                        proposals with IoU >= 0.6 to an object (at most 4000 a class, seeded), the features\n"
    "                        the classifier reads (pool5 after dropout), a ridge regression per class and offset;\n"
    "                        saved in model.safetensors (bbox.weight, bbox.bias), applied by inception detect\n"
    "  --bbox-lambda X       its ridge penalty, per pair on standardised features (default 1)\n"
    "  --task multibox       train a MultiBox network (a config with a multibox head: configs/multibox-tiny.cfg)\n"
    "                        on a detection set's boxes, all classes as one (Erhan et al. 2014): crops of\n"
    "                        30%-100% of the area and flips move the boxes; the loss matches the boxes to the\n"
    "                        priors (bipartite), location 0.3/2 x squared error + logistic confidence. Validation:\n"
    "                        recall at IoU 0.5 of the best --multibox-top (200) boxes. No --classes.\n"
    "  --priors FILE         its priors (inception multibox priors); default: k-means of the training boxes,\n"
    "                        seeded, written to DIR/priors.json\n"
    "  --val-limit N         validate on at most N images\n"
    "  --log-every K         a log row every K steps (default 10)\n"
    "  --checkpoint-every K  also checkpoint every K steps (default: at the end of each epoch)\n"
    "  --threads T           network threads (default: one per core; the loader thread comes on top)\n"
    "  --quiet               no progress on stderr\n"
    "  -h, --help            this help\n";

enum { O_LR = 256, O_MOM, O_WD, O_STEP, O_FACTOR, O_POLYAK, O_AUX, O_NOAUG, O_CONTEXT, O_PROPS, O_VPROPS, O_VLIMIT,
       O_LOG, O_CKPT, O_THREADS, O_STEPS, O_FINETUNE, O_POSFRAC, O_TASK, O_PRIORS, O_MBTOP, O_RECIPE, O_SCHEDULE,
       O_WARMUP, O_HARD, O_JITTER, O_POSIOU, O_CROPMIN, O_NOBBOX, O_BBOXLAMBDA };
static const struct option OPTS[] = {
    {"config", required_argument, 0, 'c'},     {"data", required_argument, 0, 'd'},
    {"val", required_argument, 0, 'v'},        {"classes", required_argument, 0, 'n'},
    {"epochs", required_argument, 0, 'e'},     {"seed", required_argument, 0, 's'},
    {"out", required_argument, 0, 'o'},        {"init", required_argument, 0, 'i'},
    {"resume", no_argument, 0, 'r'},           {"quiet", no_argument, 0, 'q'},
    {"batch", required_argument, 0, 'b'},      {"help", no_argument, 0, 'h'},
    {"lr", required_argument, 0, O_LR},        {"momentum", required_argument, 0, O_MOM},
    {"weight-decay", required_argument, 0, O_WD}, {"lr-step-epochs", required_argument, 0, O_STEP},
    {"lr-factor", required_argument, 0, O_FACTOR}, {"polyak", required_argument, 0, O_POLYAK},
    {"aux-weight", required_argument, 0, O_AUX}, {"no-augment", no_argument, 0, O_NOAUG},
    {"context", required_argument, 0, O_CONTEXT}, {"proposals", required_argument, 0, O_PROPS},
    {"val-proposals", required_argument, 0, O_VPROPS}, {"val-limit", required_argument, 0, O_VLIMIT},
    {"log-every", required_argument, 0, O_LOG}, {"checkpoint-every", required_argument, 0, O_CKPT},
    {"threads", required_argument, 0, O_THREADS}, {"steps", required_argument, 0, O_STEPS},
    {"finetune", required_argument, 0, O_FINETUNE}, {"pos-fraction", required_argument, 0, O_POSFRAC},
    {"task", required_argument, 0, O_TASK},    {"priors", required_argument, 0, O_PRIORS},
    {"multibox-top", required_argument, 0, O_MBTOP}, {"recipe", required_argument, 0, O_RECIPE},
    {"schedule", required_argument, 0, O_SCHEDULE}, {"warmup", required_argument, 0, O_WARMUP},
    {"hard-fraction", required_argument, 0, O_HARD}, {"jitter", required_argument, 0, O_JITTER},
    {"pos-iou", required_argument, 0, O_POSIOU}, {"crop-area-min", required_argument, 0, O_CROPMIN},
    {"no-bbox-reg", no_argument, 0, O_NOBBOX}, {"bbox-lambda", required_argument, 0, O_BBOXLAMBDA},
    {0, 0, 0, 0},
};

// The recipe first, wherever it is written, so that the other flags override its settings.
static int apply_recipe(int argc, char **argv, TrainOptions *o) {
    for (int i = 1; i < argc; i++) {
        const char *name = !strcmp(argv[i], "--recipe") && i + 1 < argc ? argv[i + 1]
                           : !strncmp(argv[i], "--recipe=", 9)        ? argv[i] + 9
                                                                     : NULL;
        if (name && train_options_recipe(o, name))
            return cli_usage_error("train", "--recipe expects scratch or paper, got '%s'", name);
    }
    return 0;
}

// Returns 0 to run, 2 on a usage error, 1 when --help was printed.
static int parse_args(int argc, char **argv, TrainOptions *o) {
    if (apply_recipe(argc, argv, o)) return 2;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "h", OPTS, NULL)) != -1;) {
        switch (c) {
        case 'c': o->config = optarg; break;
        case 'd': o->data = optarg; break;
        case 'v': o->val = optarg; break;
        case 'n': CLI_INT("train", "--classes", 1, CONFIG_MAX_CLASSES, o->classes); break;
        case 'e': CLI_INT("train", "--epochs", 1, 1000000, o->epochs); break;
        case 's': CLI_INT("train", "--seed", 0, 0x7fffffffL, o->seed); break;
        case 'o': o->out = optarg; break;
        case 'i': o->init = optarg; break;
        case 'r': o->resume = true; break;
        case 'q': o->quiet = true; break;
        case 'b': CLI_INT("train", "--batch", 1, 4096, o->batch); break;
        case O_LR: CLI_NUMBER("train", "--lr", 1e-9, 100, o->sgd.lr); break;
        case O_MOM: CLI_NUMBER("train", "--momentum", 0, 0.9999, o->sgd.momentum); break;
        case O_WD: CLI_NUMBER("train", "--weight-decay", 0, 1, o->sgd.weight_decay); break;
        case O_STEP: CLI_NUMBER("train", "--lr-step-epochs", 0, 1e9, o->sgd.step_epochs); break;
        case O_FACTOR: CLI_NUMBER("train", "--lr-factor", 0, 1, o->sgd.step_factor); break;
        case O_POLYAK: CLI_NUMBER("train", "--polyak", 0, 0.999999, o->sgd.polyak); break;
        case O_AUX: CLI_NUMBER("train", "--aux-weight", 0, 10, o->aux_weight); break;
        case O_NOAUG: o->augment = false; break;
        case O_CONTEXT: CLI_INT("train", "--context", 0, 1000, o->context); break;
        case O_PROPS: o->proposals = optarg; break;
        case O_VPROPS: o->val_proposals = optarg; break;
        case O_VLIMIT: CLI_INT("train", "--val-limit", 0, 100000000, o->val_limit); break;
        case O_LOG: CLI_INT("train", "--log-every", 1, 1000000, o->log_every); break;
        case O_CKPT: CLI_INT("train", "--checkpoint-every", 0, 1000000000, o->checkpoint_every); break;
        case O_THREADS: CLI_INT("train", "--threads", 1, 256, o->threads); break;
        case O_STEPS: CLI_INT("train", "--steps", 1, 1000000000, o->steps); break;
        case O_FINETUNE: o->finetune = optarg; break;
        case O_POSFRAC: CLI_NUMBER("train", "--pos-fraction", 0, 1, o->pos_fraction); break;
        case O_TASK:
            if (strcmp(optarg, "multibox") && strcmp(optarg, "classify"))
                return cli_usage_error("train", "--task expects classify or multibox, got '%s'", optarg);
            o->multibox = !strcmp(optarg, "multibox");
            break;
        case O_PRIORS: o->priors = optarg; break;
        case O_MBTOP: CLI_INT("train", "--multibox-top", 1, MULTIBOX_MAX_K, o->multibox_top); break;
        case O_RECIPE: break; // applied above
        case O_SCHEDULE:
            if (strcmp(optarg, "cosine") && strcmp(optarg, "step"))
                return cli_usage_error("train", "--schedule expects cosine or step, got '%s'", optarg);
            o->sgd.schedule = !strcmp(optarg, "cosine") ? SCHEDULE_COSINE : SCHEDULE_STEP;
            break;
        case O_WARMUP: CLI_NUMBER("train", "--warmup", 0, 1e6, o->sgd.warmup_epochs); break;
        case O_HARD: CLI_NUMBER("train", "--hard-fraction", 0, 1, o->hard_fraction); break;
        case O_JITTER: CLI_NUMBER("train", "--jitter", 0, 1, o->jitter); break;
        case O_POSIOU: CLI_NUMBER("train", "--pos-iou", 0.01, 1, o->pos_iou); break;
        case O_CROPMIN: CLI_NUMBER("train", "--crop-area-min", 0.01, 1, o->crop_area_min); break;
        case O_NOBBOX: o->bbox_reg = false; break;
        case O_BBOXLAMBDA: CLI_NUMBER("train", "--bbox-lambda", 0, 1e6, o->bbox_lambda); break;
        case 'h': fputs(USAGE, stdout); return 1;
        default: return cli_usage_error("train", "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    if (!o->config || !o->data || !o->out || (!o->classes && !o->multibox))
        return cli_usage_error("train", "--config, --data, --classes and --out are required (--classes: not for "
                                        "--task multibox)");
    if (o->priors && !o->multibox) return cli_usage_error("train", "--priors goes with --task multibox");
    if (o->init && o->finetune) return cli_usage_error("train", "--init and --finetune exclude each other");
    return 0;
}

int cmd_train(int argc, char **argv) {
    TrainOptions o = train_options_default();
    int status = parse_args(argc, argv, &o);
    if (status) return status == 1 ? 0 : status;
    Err e;
    Cluster c;
    if (cluster_open(&c, &e)) return cli_fail("train", &e);
    o.cluster = &c;
    o.quiet |= c.rank > 0; // rank 0 speaks for the job
    int rc = 0;
    if (train_run(&o, &e)) rc = e.msg[0] ? cli_fail("train", &e) : 1; // empty: another process said what failed
    cluster_close(&c);
    return rc;
}
