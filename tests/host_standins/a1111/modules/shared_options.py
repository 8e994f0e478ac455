"""modules/shared_options.py: the built-in settings an extension may read (same keys and defaults)."""

from modules.options import OptionInfo, options_section

restricted_opts = {"samples_filename_pattern", "directories_filename_pattern", "outdir_samples", "outdir_txt2img_samples",
                   "outdir_img2img_samples", "outdir_extras_samples", "outdir_grids", "outdir_txt2img_grids",
                   "outdir_save", "outdir_init_images", "temp_dir", "clean_temp_dir_at_start"}

options_templates = {}

options_templates.update(options_section(('saving-images', "Saving images/grids", "saving"), {
    "samples_format": OptionInfo('png', 'File format for images'),
    "jpeg_quality": OptionInfo(80, "Quality for saved jpeg and avif images"),
}))

options_templates.update(options_section(('training', "Textual Inversion", "training"), {
    "multiple_tqdm": OptionInfo(True, "Add a second progress bar to the console that shows progress for an entire job."),
    "unload_models_when_training": OptionInfo(False, "Move VAE and CLIP to RAM when training if possible. Saves VRAM."),
    "pin_memory": OptionInfo(False, "Turn on pin_memory for DataLoader. Makes training slightly faster but can increase memory usage."),
    "save_optimizer_state": OptionInfo(False, "Saves Optimizer state as separate *.optim file."),
    "training_xattention_optimizations": OptionInfo(False, "Use cross attention optimizations while training"),
}))

options_templates.update(options_section(('sd', "Stable Diffusion", "sd"), {
    "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint"),
    "sd_checkpoints_limit": OptionInfo(1, "Maximum number of checkpoints loaded at the same time"),
    "sd_checkpoint_cache": OptionInfo(0, "Checkpoints to cache in RAM"),
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip"),
    "sdxl_clip_l_skip": OptionInfo(False, "Clip skip SDXL"),
    "emphasis": OptionInfo("Original", "Emphasis mode"),
    "comma_padding_backtrack": OptionInfo(20, "Prompt word wrap length limit"),
    "use_old_emphasis_implementation": OptionInfo(False, "Use old emphasis implementation."),
    "sd_noise_schedule": OptionInfo("Default", "Noise schedule for sampling"),
}))

options_templates.update(options_section(('sdxl', "Stable Diffusion XL", "sd"), {
    "sdxl_crop_top": OptionInfo(0, "crop top coordinate"),
    "sdxl_crop_left": OptionInfo(0, "crop left coordinate"),
    "sdxl_refiner_low_aesthetic_score": OptionInfo(2.5, "SDXL low aesthetic score"),
    "sdxl_refiner_high_aesthetic_score": OptionInfo(6.0, "SDXL high aesthetic score"),
}))

options_templates.update(options_section(('optimizations', "Optimizations", "sd"), {
    "cross_attention_optimization": OptionInfo("Automatic", "Cross attention optimization"),
    "persistent_cond_cache": OptionInfo(True, "Persistent cond cache"),
    "fp8_storage": OptionInfo("Disable", "FP8 weight"),
    "cache_fp16_weight": OptionInfo(False, "Cache FP16 weight for LoRA"),
}))

options_templates.update(options_section(('extra_networks', "Extra Networks", "sd"), {
    "textual_inversion_print_at_load": OptionInfo(False, "Print a list of Textual Inversion embeddings when loading model"),
    "textual_inversion_add_hashes_to_infotext": OptionInfo(True, "Add Textual Inversion hashes to infotext"),
}))

options_templates.update(options_section(('ui', "Live previews", "ui"), {
    "show_progressbar": OptionInfo(True, "Show progressbar"),
    "live_previews_enable": OptionInfo(True, "Show live previews of the created image"),
    "live_previews_image_format": OptionInfo("png", "Live preview file format"),
    "show_progress_grid": OptionInfo(True, "Show previews of all images generated in a batch as a grid"),
    "show_progress_every_n_steps": OptionInfo(10, "Live preview display period"),
    "show_progress_type": OptionInfo("Approx NN", "Live preview method"),
}))

options_templates.update(options_section(('system', "System", "system"), {
    "memmon_poll_rate": OptionInfo(8, "VRAM usage polls per second during generation."),
    "profiling_enable": OptionInfo(False, "Enable profiling"),
    "profiling_filename": OptionInfo("trace.json", "Profile filename"),
}))
